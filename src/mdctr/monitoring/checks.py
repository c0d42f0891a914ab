"""The Great Expectations checkpoint on a window: the training schema's suite, restricted to what a log holds.

The suite is :func:`mdctr.validation.suite_specs` of the serving version's schema (never written by hand). A log
holds the feature columns (and the domain column when requests carried it) but no label, no time column and no
raw-only columns, and live traffic may repeat rows or miss domains, so the expectations kept are those on the
feature (and domain) columns: presence, not-null, types, value rules (id ranges, allowed codes) and dense ranges.
Sparse values are logged as strings; integer-id columns are turned back into integers first (a value that is
not an integer stays a string, which the suite's type and range checks then refuse).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mdctr.data.encode import FeatureSpec
from mdctr.validation import ExpectationSpec, ValidationResult, suite_specs
from mdctr.validation.gate import DOMAIN_ROWS_COL, DUPLICATE_COL, validate_specs

#: expectations about the table as a whole or derived columns: they judge a training table, not traffic
_TABLE_RULES = ("expect_table_row_count_to_be_between", "expect_column_distinct_values_to_contain_set")


def window_specs(spec: FeatureSpec, columns: list[str]) -> list[ExpectationSpec]:
    """The schema's expectations that concern ``columns`` (the window's feature and domain columns)."""
    keep = set(columns) - {DUPLICATE_COL, DOMAIN_ROWS_COL}
    return [
        s for s in suite_specs(spec.schema) if s.type not in _TABLE_RULES and s.kwargs.get("column") in keep
    ]


def as_table(sample: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The logged sample in the canonical table's types: integer-id sparse columns back to ints, raw domain
    values (logged as strings) back to the schema's values; anything else stays as logged, for the suite to
    judge."""
    out = sample.copy()
    for col in out.columns:
        # pandas 3 reads Arrow strings as the "str" dtype, which GX 1.24's type check does not know (the data
        # gate hands GX such columns as object dtype too)
        if isinstance(out[col].dtype, pd.StringDtype):
            out[col] = out[col].astype(object)
    for col in spec.schema.sparse:
        if spec.kinds[col] != "int" or col not in out.columns:
            continue
        num = pd.to_numeric(out[col], errors="coerce")
        whole = num.notna() & (num == num.round())
        if whole.all():
            out[col] = num.astype("int64")
        else:
            values = out[col].astype(object)
            values[whole] = num[whole].astype("int64")
            out[col] = values
    domain = spec.schema.domain
    if spec.domain_values is not None and domain in out.columns:
        # data with raw domain values logs them as strings (str(value)); back to the table's values, so the
        # suite's type and allowed-value checks judge what the request sent, not the log's encoding
        raw = {str(v): v for v in spec.domain_values}
        out[domain] = out[domain].map(lambda v: raw.get(v, v))
    return out


def check_window(
    sample: pd.DataFrame, spec: FeatureSpec, report_dir: Path, *, source: str
) -> ValidationResult:
    """Run the window expectations over ``sample`` (a uniform sample of the window's rows); reports (HTML,
    JSON, GX Data Docs) go to ``report_dir``."""
    table = as_table(sample, spec)
    return validate_specs(
        table, spec.schema, window_specs(spec, list(table.columns)), report_dir, source=source
    )
