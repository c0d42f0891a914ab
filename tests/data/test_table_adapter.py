"""Bring-your-own table adapter: CSV and parquet with schema.yaml, strict YAML, and bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from mdctr.config import ConfigError
from mdctr.data import DataError, load_dataset

RAW = pd.DataFrame(
    {
        "user": ["u1", "u2", "u1", "u3", "u2", "u4"],
        "item": [10, 11, 12, 10, 13, 11],
        "price": [1.5, None, 3.0, 2.0, 0.5, 9.0],
        "clicked": [1, 0, 0, 1, 1, 0],
        "country": ["us", "de", "us", "fr", "de", "us"],
        "ts": [100, 50, 300, 200, 10, 400],
    }
)
YAML = {
    "name": "shop",
    "sparse": ["user", "item"],
    "dense": ["price"],
    "label": "clicked",
    "domain": "country",
    "user": "user",
    "item": "item",
    "time": "ts",
}


def write_table(root: Path, *, fmt: str = "csv", raw: pd.DataFrame = RAW, **yaml_over: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.yaml").write_text(yaml.safe_dump({**YAML, **yaml_over}))
    if fmt == "csv":
        raw.to_csv(root / "events.csv", index=False)
    else:
        raw.to_parquet(root / "events.parquet", index=False)
    return root


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_loads_with_sorted_domains(tmp_path: Path, fmt: str) -> None:
    loaded = load_dataset("table", write_table(tmp_path / "t", fmt=fmt))
    t, s = loaded.table, loaded.schema
    assert s.name == "shop" and s.time == "ts"
    assert s.domain_names == ("de", "fr", "us")
    assert t[s.domain].tolist() == [2, 0, 2, 1, 0, 2]
    assert t["price"].isna().sum() == 1  # NaN dense values survive; the encoder fills the train mean
    assert t[s.label].tolist() == RAW["clicked"].tolist()


def test_explicit_domain_values_define_ids(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", domain_values=["us", "de", "fr"], domain_names=["US", "DE", "FR"])
    loaded = load_dataset("table", root)
    assert loaded.schema.domain_names == ("US", "DE", "FR")
    assert loaded.table[loaded.schema.domain].tolist() == [0, 1, 0, 2, 1, 0]


def test_domain_outside_known_set(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", domain_values=["us", "de"])
    with pytest.raises(DataError, match=r"events\.csv domain column 'country' must be one of.*'fr'"):
        load_dataset("table", root)


def test_path_and_schema_options(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", fmt="parquet")
    elsewhere = tmp_path / "elsewhere.yaml"
    (root / "schema.yaml").rename(elsewhere)
    loaded = load_dataset("table", tmp_path, path=root / "events.parquet", schema=elsewhere)
    assert len(loaded.table) == len(RAW)


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="labell"):
        load_dataset("table", write_table(tmp_path / "t", labell="x"))


def test_missing_required_yaml_key(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t")
    data = yaml.safe_load((root / "schema.yaml").read_text())
    del data["domain"]
    (root / "schema.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['domain'\]"):
        load_dataset("table", root)


def test_label_that_cannot_be_binary(tmp_path: Path) -> None:
    raw = RAW.assign(clicked=[1, 0, 5, 1, 1, 0])
    with pytest.raises(DataError, match=r"events\.csv label column 'clicked' must be 0/1.*e\.g\. 5"):
        load_dataset("table", write_table(tmp_path / "t", raw=raw))
    # with a threshold the same column is a rating
    loaded = load_dataset("table", write_table(tmp_path / "t2", raw=raw, label_threshold=1))
    assert loaded.table["clicked"].tolist() == [1, 0, 1, 1, 1, 0]


def test_non_numeric_dense(tmp_path: Path) -> None:
    raw = RAW.assign(price=["1", "2", "cheap", "3", "4", "5"])
    with pytest.raises(DataError, match=r"events\.csv column 'price' expects numbers.*'cheap'"):
        load_dataset("table", write_table(tmp_path / "t", raw=raw))


def test_wrong_separator(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t")
    RAW.to_csv(root / "events.csv", index=False, sep=";")
    with pytest.raises(DataError, match=r"events\.csv lacks column.*wrong separator"):
        load_dataset("table", root)


def test_header_only_file(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t")
    (root / "events.csv").write_text(",".join(RAW.columns) + "\n")
    with pytest.raises(DataError, match=r"events\.csv has a header but 0 rows"):
        load_dataset("table", root)


def test_ambiguous_data_files(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t")
    RAW.to_parquet(root / "more.parquet")
    with pytest.raises(DataError, match=r"exactly one data file.*events\.csv.*more\.parquet"):
        load_dataset("table", root)


def test_ranges_and_allowed_values_from_schema_yaml(tmp_path: Path) -> None:
    """``ranges``/``allowed`` in schema.yaml are the schema's value rules: loading names the rows, and the
    data gate reports them as expectations."""
    from mdctr.validation import validate_dataset

    rules = {"ranges": {"price": [0, 10], "ts": [0, None]}, "allowed": {"item": [10, 11, 12, 13]}}
    loaded = load_dataset("table", write_table(tmp_path / "ok", **rules))
    assert loaded.schema.value_rules["price"].high == 10 and loaded.schema.value_rules["item"].allowed

    raw = RAW.assign(price=[1.5, None, 3.0, 12.0, 0.5, 15.0], item=[10, 11, 12, 10, 99, 11])
    root = write_table(tmp_path / "bad", raw=raw, **rules)
    with pytest.raises(
        DataError,
        match=r"column 'price' must be within \[0, 10\]; found 2 row\(s\) outside at events\.csv rows 4, 6, e\.g\. 12\.0",
    ):
        load_dataset("table", root)
    result = validate_dataset("table", root, tmp_path / "report")
    assert list(result.failures) == [
        "expect_column_values_to_be_in_set [item]: 1 row(s) (16.7%) unexpected at events.csv row 5; "
        "expected {'value_set': [10, 11, 12, 13]}; e.g. [99]",
        "expect_column_values_to_be_between [price]: 2 row(s) (40%) unexpected at events.csv rows 4, 6; "
        "expected {'min_value': 0, 'max_value': 10}; e.g. [12.0, 15.0]",
    ]


@pytest.mark.parametrize(
    ("rules", "match"),
    [
        (
            {"ranges": {"country": [0, 1]}},
            r"ranges names 'country', which is not a sparse, dense, time or thresholded label column",
        ),
        ({"ranges": {"price": [0]}}, r"ranges\.price must be \[low, high\]"),
        ({"allowed": {"item": []}}, r"allowed\.item must be a non-empty list"),
    ],
)
def test_bad_value_rules_are_config_errors(tmp_path: Path, rules: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset("table", write_table(tmp_path / "t", **rules))


def test_missing_values_name_the_rows_in_plain_words(tmp_path: Path) -> None:
    raw = RAW.assign(user=["u1", None, "u1", None, "u2", "u4"])
    with pytest.raises(
        DataError, match=r"sparse column 'user' has 2 missing value\(s\) at events\.csv rows 2, 4$"
    ):
        load_dataset("table", write_table(tmp_path / "t", raw=raw))
    # a NaN label: no numpy repr, the row named
    raw = RAW.assign(clicked=[1, 0, None, 1, 1, 0])
    with pytest.raises(DataError) as err:
        load_dataset("table", write_table(tmp_path / "t2", raw=raw))
    assert str(err.value).endswith(
        "label column 'clicked' must be 0/1; found 1 row(s) with other values at events.csv row 3, "
        "e.g. a missing value"
    )
    with pytest.raises(DataError) as err:
        load_dataset("table", write_table(tmp_path / "t3", raw=raw, label_threshold=1))
    assert str(err.value).endswith(
        "label column 'clicked': 1 missing or non-numeric value(s) at events.csv row 3, e.g. a missing value; "
        "expected numbers"
    )
