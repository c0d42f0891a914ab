"""Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., SIGIR 2018) in the Scenario-Wise Rec layout.

The benchmark's preprocessed files are ``ali_ccp_{train,val,test}.csv`` (or the ``*_sample.csv`` format
samples): a header of Ali-CCP field ids, labels ``click`` and ``purchase``, integer-coded categorical fields
and ``D``-prefixed dense fields. All three files are read into one table; the split is ours (seeded 80/10/10),
so the origin file is not kept.

Protocol: label = ``click``; domain = field ``301`` (the scenario) ∈ {1, 2, 3} → 0..2; every other integer
field is sparse, every ``D*`` field dense. ``purchase`` is dropped (a post-click outcome: using it as a feature
would leak the label).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mdctr.data.base import DataError, DatasetAdapter, LoadedDataset, register_dataset
from mdctr.data.table import binary_label, map_domain, numeric_column, read_table_file, require_columns
from mdctr.schema import FeatureSchema, ValueRule

SPLITS = ("train", "val", "test")
LABEL = "click"
DROPPED = ("purchase",)
SCENARIO_FIELD = "301"
SCENARIOS = (1, 2, 3)
DOMAIN = "domain"
SPARSE = (
    "101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207", "210", "216",
    "508", "509", "702", "853", "109_14", "110_14", "127_14", "150_14",
)  # fmt: skip
DENSE = ("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853")

SCHEMA = FeatureSchema(
    name="ali-ccp",
    sparse=SPARSE,
    dense=DENSE,
    label=LABEL,
    domain=DOMAIN,
    domain_names=tuple(f"scenario {s}" for s in SCENARIOS),
    user="101",  # Ali-CCP field 101 is the user id
    item="205",  # field 205 is the item id
    value_rules={"101": ValueRule(low=0), "205": ValueRule(low=0)},  # ids are non-negative codes
    # impressions carry no timestamp, so one user shown one ad twice is two identical rows: 3.5% of the
    # 200-row sample (7 rows) repeat an earlier row
    max_duplicate_rate=0.05,
)


def split_files(source: Path) -> list[Path]:
    """The full files if all three exist, else the three samples; a partial set is an error."""
    for pattern in ("ali_ccp_{}.csv", "ali_ccp_{}_sample.csv"):
        paths = [source / pattern.format(s) for s in SPLITS]
        if all(p.is_file() for p in paths):
            return paths
        if any(p.is_file() for p in paths):
            missing = [str(p) for p in paths if not p.is_file()]
            raise DataError(f"dataset 'ali-ccp': incomplete file set in {source}; missing {missing}")
    raise DataError(
        f"dataset 'ali-ccp': {source} holds neither ali_ccp_{{train,val,test}}.csv nor the *_sample.csv files"
    )


@register_dataset("ali-ccp")
class AliCCP(DatasetAdapter):
    default_subdir = "samples/ali-ccp"

    def load(self, source: Path) -> LoadedDataset:
        parts = []
        expected = [*SPARSE, *DENSE, LABEL, SCENARIO_FIELD]
        for path in split_files(source):
            df = read_table_file(path, self.name)
            require_columns(df, path, self.name, expected)
            out = {c: numeric_column(df, c, path, self.name, integer=True) for c in SPARSE}
            out.update({c: numeric_column(df, c, path, self.name).astype("float32") for c in DENSE})
            out[LABEL] = binary_label(df, LABEL, path, self.name)
            out[DOMAIN] = map_domain(df[SCENARIO_FIELD], SCENARIOS, path, self.name, SCENARIO_FIELD)
            parts.append(pd.DataFrame(out))
        table = pd.concat(parts, ignore_index=True)[list(SCHEMA.columns)]
        return LoadedDataset(table=table, schema=SCHEMA, extras={})
