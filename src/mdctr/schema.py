"""The feature schema: the one definition of a dataset's columns.

Everything that needs to know which columns exist derives it from a :class:`FeatureSchema`: the loaders,
the encoder, the embedding layer, the Great Expectations suite, the MLflow signature and serving input checks.
Column names are never written as string literals elsewhere.

A dataset adapter turns raw files into a *canonical interaction table*: a pandas DataFrame holding exactly
``schema.columns`` where

* every sparse column holds raw categorical values (ints or strings, never NaN),
* every dense column holds floats,
* the label column holds 0/1 (int8),
* the domain column holds the hand-crafted domain id, an int in ``range(schema.num_domains)``,
* the optional time column holds an int64 timestamp (seconds).

Allowed raw values (rating scales, age codes, id ranges) are declared here too, as :class:`ValueRule` per
column: the data gate derives its range/set expectations from them and :meth:`FeatureSchema.check_table`
enforces them, so a rating of 9 can never silently become a positive label. Columns that exist only in the raw
files (e.g. the ML-1M rating, replaced by the label) are listed in ``raw_columns``; the adapter hands them over in
:attr:`mdctr.data.base.LoadedDataset.raw`, aligned row by row with the canonical table. The label itself may be a
raw column too (a bring-your-own table whose ``rating`` column becomes the 0/1 ``rating`` label): its rule is then
checked on the raw values, and the gate sees them as :meth:`FeatureSchema.raw_name` (``"rating (raw)"``).

The rules a table must meet are declared once, here, and enforced twice from that one declaration:
:meth:`FeatureSchema.check_table` (every load: ``mdctr data prepare``, ``load_dataset``) and the Great
Expectations suite :func:`mdctr.validation.suite_specs` derives (``mdctr data validate``, the pipeline's validate
step). Both refuse the same tables: sparse ids that are floats, labels outside 0/1, unknown domain ids, values
outside a :class:`ValueRule`, dense values outside :attr:`FeatureSchema.dense_ranges`, more than
:attr:`FeatureSchema.max_duplicate_rate` of exactly duplicated rows. One rule is the gate's alone: every domain
has at least :attr:`FeatureSchema.min_domain_rows` rows (loading only warns, so that a sample holding some of the
domains still loads).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class SchemaError(ValueError):
    """The data does not match its schema; the message names the file, column and expected vs found."""


def plain_value(v: Any) -> Any:
    """A numpy scalar as the Python value, so error messages read ``3`` rather than ``np.int64(3)``."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass(frozen=True)
class DenseRange:
    """Inclusive range a dense feature must lie in (used by validation); None means unbounded."""

    low: float | None = None
    high: float | None = None


def describe_rows(mask: Any, labels: Any = None, limit: int = 5, total: int | None = None) -> str:
    """Name the rows where boolean ``mask`` is true: ``"row 3, row 7 (and 12 more)"``.

    ``labels`` (same length as ``mask``) names each row, e.g. a :class:`SourceLines` (``"ratings.dat lines 3,
    7"``); without it rows are numbered from 1 in table order. ``total``: how many rows are bad in all, when
    ``mask`` marks only some of them.
    """
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    total = len(idx) if total is None else total
    more = f" (and {total - min(limit, len(idx))} more)" if total > min(limit, len(idx)) else ""
    if isinstance(labels, SourceLines):
        nums = ", ".join(str(int(labels.lines[i])) for i in idx[:limit])
        return f"{labels.file} {labels.unit}{'s' if total > 1 else ''} {nums}{more}"
    if labels is None:
        names = [f"row {i + 1}" for i in idx[:limit]]
    else:
        names = [str(labels[int(i)]) for i in idx[:limit]]
    return ", ".join(names) + more


@dataclass(frozen=True, eq=False)
class SourceLines:
    """Row names ``"<file> line <n>"`` for a table read from one file; ``lines`` holds each row's 1-based line
    (or, with ``unit="row"``, matrix row) number, int array [rows]. Names are built only for rows a message
    shows."""

    file: str
    lines: Any
    unit: str = "line"

    def __getitem__(self, i: int) -> str:
        return f"{self.file} {self.unit} {int(self.lines[i])}"

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(frozen=True)
class ValueRule:
    """Allowed raw values of one column: an inclusive range and/or an explicit set (None = unconstrained)."""

    low: float | None = None
    high: float | None = None
    allowed: tuple[Any, ...] | None = None

    def describe(self) -> str:
        parts = []
        if self.allowed is not None:
            parts.append(f"one of {list(self.allowed)}")
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{plain_value(self.low):g}"
            hi = "inf" if self.high is None else f"{plain_value(self.high):g}"
            parts.append(f"within [{lo}, {hi}]")
        return " and ".join(parts) or "any value"

    def violations(self, values: Any) -> Any:
        """Boolean mask (numpy) of the non-null values that break this rule."""
        import pandas as pd

        s = pd.Series(values).reset_index(drop=True)
        bad = np.zeros(len(s), dtype=bool)
        present = s.notna().to_numpy()
        if self.allowed is not None:
            bad |= present & ~s.isin(list(self.allowed)).to_numpy()
        if self.low is not None or self.high is not None:
            num = pd.to_numeric(s, errors="coerce")
            nonnum = present & num.isna().to_numpy()
            lo = -np.inf if self.low is None else self.low
            hi = np.inf if self.high is None else self.high
            bad |= nonnum | (present & ~nonnum & ~num.between(lo, hi).to_numpy())
        return bad


@dataclass(frozen=True)
class FeatureSchema:
    """Columns and roles of one dataset's canonical interaction table.

    Attributes:
        name: dataset name as registered (e.g. ``"ml-1m"``).
        sparse: categorical feature columns, embedded by the models.
        dense: numeric feature columns, standardised by the encoder.
        label: binary target column (0/1).
        domain: hand-crafted domain id column; values in ``range(len(domain_names))``.
        domain_names: human-readable name of each hand-crafted domain, index = domain id.
        user: column identifying the user (for descriptions), or None.
        item: column identifying the item (for descriptions), or None.
        time: int64 timestamp column enabling a time split, or None.
        dense_ranges: allowed range per dense column (validation).
        min_domain_rows: validation: every hand-crafted domain must have at least this many rows.
        max_duplicate_rate: validation: at most this fraction of fully duplicated rows.
        value_rules: allowed raw values per column (canonical or raw); the gate's range/set expectations.
        raw_columns: columns of the raw files that the canonical table drops (e.g. a rating turned into the
            label); the gate checks them from ``LoadedDataset.raw``.
        dense_nullable: dense columns may hold NaN (the encoder fills the train mean); otherwise the gate
            expects no missing dense value.
    """

    name: str
    sparse: tuple[str, ...]
    dense: tuple[str, ...]
    label: str
    domain: str
    domain_names: tuple[str, ...]
    user: str | None = None
    item: str | None = None
    time: str | None = None
    dense_ranges: dict[str, DenseRange] = field(default_factory=dict)
    min_domain_rows: int = 1
    max_duplicate_rate: float = 0.01
    value_rules: dict[str, ValueRule] = field(default_factory=dict)
    raw_columns: tuple[str, ...] = ()
    dense_nullable: bool = False

    def __post_init__(self) -> None:
        cols = self.columns
        if len(set(cols)) != len(cols):
            raise SchemaError(f"schema {self.name!r}: a column has two roles: {cols}")
        if not self.domain_names:
            raise SchemaError(f"schema {self.name!r}: at least one domain name is required")
        unknown = set(self.dense_ranges) - set(self.dense)
        if unknown:
            raise SchemaError(f"schema {self.name!r}: dense_ranges names non-dense columns {sorted(unknown)}")
        # the label is the one canonical column with a raw form of its own (a rating before its threshold)
        clash = set(self.raw_columns) & (set(cols) - {self.label})
        if clash:
            raise SchemaError(f"schema {self.name!r}: raw_columns {sorted(clash)} are also canonical columns")
        if not 0.0 <= self.max_duplicate_rate <= 1.0:
            raise SchemaError(
                f"schema {self.name!r}: max_duplicate_rate must be a fraction in [0, 1], found "
                f"{self.max_duplicate_rate!r}"
            )
        unknown = set(self.value_rules) - set(cols) - set(self.raw_columns)
        if unknown:
            raise SchemaError(
                f"schema {self.name!r}: value_rules names unknown column(s) {sorted(unknown)}; "
                f"known: {list(cols) + list(self.raw_columns)}"
            )

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    @property
    def features(self) -> tuple[str, ...]:
        """Model input columns (sparse then dense); the domain id is not a feature."""
        return self.sparse + self.dense

    @property
    def columns(self) -> tuple[str, ...]:
        """All columns of the canonical table, in canonical order."""
        extra = (self.time,) if self.time else ()
        return self.sparse + self.dense + (self.label, self.domain) + extra

    def raw_name(self, col: str) -> str:
        """The name a raw column has beside the canonical ones (in the gate's batch): itself, or
        ``"<col> (raw)"`` for the label's raw values, which share the label's name."""
        return f"{col} (raw)" if col in self.raw_columns and col in self.columns else col

    @property
    def serving_columns(self) -> tuple[str, ...]:
        """Columns a serving request carries: the features plus the hand-crafted domain id."""
        return self.features + (self.domain,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dense_ranges"] = {k: asdict(v) for k, v in self.dense_ranges.items()}
        d["value_rules"] = {
            k: {**asdict(v), "allowed": None if v.allowed is None else list(v.allowed)}
            for k, v in self.value_rules.items()
        }
        d["raw_columns"] = list(self.raw_columns)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSchema:
        d = dict(d)
        for key in ("sparse", "dense", "domain_names"):
            d[key] = tuple(d.get(key, ()))
        d["dense_ranges"] = {k: DenseRange(**v) for k, v in (d.get("dense_ranges") or {}).items()}
        d["raw_columns"] = tuple(d.get("raw_columns") or ())
        d["value_rules"] = {
            k: ValueRule(
                low=v.get("low"),
                high=v.get("high"),
                allowed=None if v.get("allowed") is None else tuple(v["allowed"]),
            )
            for k, v in (d.get("value_rules") or {}).items()
        }
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def check_table(self, df: Any, source: str, *, raw: Any = None, row_labels: Any = None) -> None:
        """Raise :class:`SchemaError` on the first rule ``df`` breaks; the same rules as the data gate's suite.

        Rules, in order: every schema column present and at least one row; no missing sparse, label, domain or
        time value (nor dense, unless :attr:`dense_nullable`); sparse ids integers or strings, never floats;
        dense floats; label, domain and time integers; label 0/1; :attr:`value_rules` (checked on ``raw`` for
        :attr:`raw_columns`); :attr:`dense_ranges`; domain ids in ``0..num_domains-1``; at most
        :attr:`max_duplicate_rate` of rows repeating an earlier row exactly. Fewer than
        :attr:`min_domain_rows` rows in a domain is logged as a warning here and refused by the gate.

        ``source`` names the file or step the table came from; ``row_labels`` (one per row, e.g. ``"line 7"``)
        names offending rows in the message (default: row numbers from 1).
        """
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(
                f"{source}: missing column(s) {missing}; expected {list(self.columns)}, found {list(df.columns)}"
            )
        if len(df) == 0:
            raise SchemaError(f"{source}: table is empty (0 rows); expected at least 1 row")
        self._check_nulls_and_types(df, source, row_labels)
        self._check_values(df, source, raw, row_labels)
        self._warn_small_domains(df, source)
        self.check_duplicates(df, source, row_labels=row_labels)

    def _check_nulls_and_types(self, df: Any, source: str, row_labels: Any) -> None:
        """No missing values where the schema wants none; sparse ids never floats; dense floats; label, domain
        and time integers."""
        not_null = self.sparse + (self.label, self.domain) + ((self.time,) if self.time else ())
        if not self.dense_nullable:
            not_null += self.dense
        for col in not_null:
            null = df[col].isna().to_numpy()
            if null.any():
                raise SchemaError(
                    f"{source}: column {col!r} has {int(null.sum())} missing value(s) at "
                    f"{describe_rows(null, row_labels)}; expected none"
                )
        for col in self.sparse:
            floats = float_values(df[col])
            if floats.any():
                raise SchemaError(
                    f"{source}: sparse column {col!r} holds floats at {describe_rows(floats, row_labels)}, e.g. "
                    f"{plain_value(df[col].to_numpy()[floats][0])!r}; ids must be integers or strings"
                )
        kinds = [(c, "f", "floats") for c in self.dense] + [
            (c, "iu", "integers") for c in (self.label, self.domain, *((self.time,) if self.time else ()))
        ]
        for col, kind, what in kinds:
            if df[col].dtype.kind not in kind:
                raise SchemaError(f"{source}: column {col!r} has dtype {df[col].dtype}; expected {what}")

    def _check_values(self, df: Any, source: str, raw: Any, row_labels: Any) -> None:
        """Label 0/1, :attr:`value_rules` (on ``raw`` for :attr:`raw_columns`), :attr:`dense_ranges`, domain
        ids in ``0..num_domains-1``."""
        bad_label = (~df[self.label].isin([0, 1])).to_numpy()
        if bad_label.any():
            raise SchemaError(
                f"{source}: column {self.label!r} must be 0/1; found {int(bad_label.sum())} row(s) with "
                f"other values at {describe_rows(bad_label, row_labels)}, "
                f"e.g. {plain_value(df[self.label].to_numpy()[bad_label][0])!r}"
            )
        for col, rule in self.value_rules.items():
            frame = raw if col in self.raw_columns else df
            if frame is None or col not in frame.columns:
                if col in self.raw_columns:
                    raise SchemaError(f"{source}: raw column {col!r} was not handed over for its value check")
                continue
            bad = rule.violations(frame[col])
            if bad.any():
                raise SchemaError(
                    f"{source}: column {col!r} must be {rule.describe()}; found {int(bad.sum())} row(s) outside "
                    f"at {describe_rows(bad, row_labels)}, e.g. {plain_value(frame[col].to_numpy()[bad][0])!r}"
                )
        for col, rng in self.dense_ranges.items():
            rule = ValueRule(low=rng.low, high=rng.high)
            bad = rule.violations(df[col])
            if bad.any():
                raise SchemaError(
                    f"{source}: dense column {col!r} must be {rule.describe()}; found {int(bad.sum())} row(s) "
                    f"outside at {describe_rows(bad, row_labels)}, e.g. {plain_value(df[col].to_numpy()[bad][0])!r}"
                )
        bad_dom = (~df[self.domain].isin(list(range(self.num_domains)))).to_numpy()
        if bad_dom.any():
            raise SchemaError(
                f"{source}: column {self.domain!r} must be in 0..{self.num_domains - 1}; found "
                f"{int(bad_dom.sum())} row(s) outside at {describe_rows(bad_dom, row_labels)}, "
                f"e.g. {plain_value(df[self.domain].to_numpy()[bad_dom][0])!r}"
            )

    def _warn_small_domains(self, df: Any, source: str) -> None:
        """Log a warning when a domain has fewer than :attr:`min_domain_rows` rows."""
        if self.min_domain_rows <= 0:
            return
        counts = np.bincount(df[self.domain].to_numpy().astype(np.int64), minlength=self.num_domains)
        few = np.flatnonzero(counts < self.min_domain_rows)
        if len(few):
            # the one rule only the gate enforces: a sample or a filtered copy may lack some domains (the
            # KuaiRand sample holds 1 of its 5 tabs) and still trains; a pipeline run stops at the gate
            log.warning(
                "%s: %d domain(s) have fewer than %d rows, e.g. %r with %d; the data gate refuses this",
                source,
                len(few),
                self.min_domain_rows,
                self.domain_names[int(few[0])],
                int(counts[few[0]]),
            )

    def check_duplicates(self, df: Any, source: str, *, row_labels: Any = None) -> None:
        """Raise :class:`SchemaError` when more than :attr:`max_duplicate_rate` of ``df``'s rows repeat an
        earlier row exactly over the schema's columns; the message gives the share and one repeated row."""
        import pandas as pd

        dup = df.duplicated(subset=list(self.columns)).to_numpy()
        share = float(dup.mean()) if len(dup) else 0.0
        if share <= self.max_duplicate_rate:
            return
        first = int(np.flatnonzero(dup)[0])
        cols = list(self.columns)
        # values column by column: a row of mixed dtypes read as one Series would turn ids 1 into 1.0
        shown = {c: plain_value(df[c].iat[first]) for c in cols}
        same = (df[cols].iloc[:first] == pd.Series(shown)).all(axis=1).to_numpy()
        original = np.zeros(len(df), dtype=bool)
        original[int(np.flatnonzero(same)[0]) if same.any() else first] = True
        at = np.zeros(len(df), dtype=bool)
        at[first] = True
        raise SchemaError(
            f"{source}: {int(dup.sum())} of {len(df)} rows ({share:.2%}) repeat an earlier row exactly; at most "
            f"{self.max_duplicate_rate:.2%} may (max_duplicate_rate), e.g. {describe_rows(at, row_labels)} "
            f"repeats {describe_rows(original, row_labels)}: {shown}"
        )


def float_values(values: Any) -> Any:
    """Boolean mask (numpy) of the non-null values that are floats: every value of a float column, the float
    elements of an object column (ids read as ``7.0``). Sparse ids must be integers or strings."""
    import pandas as pd

    s = pd.Series(values)
    if s.dtype.kind == "f":
        return s.notna().to_numpy()
    if s.dtype != object:
        return np.zeros(len(s), dtype=bool)
    # one C pass decides most columns; only mixed object columns are looked at value by value
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "integer", "empty", "bytes", "boolean"):
        return np.zeros(len(s), dtype=bool)
    return s.map(lambda v: isinstance(v, float | np.floating) and not np.isnan(v)).to_numpy(dtype=bool)
