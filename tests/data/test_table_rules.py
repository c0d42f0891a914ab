"""The table rules every load enforces (issue #22, item 5): ids written as integers or declared, a duplicate-row
limit, a declared scale for the raw label behind ``label_threshold``, and a cheap refusal of binary files.

Each test builds a small bring-your-own table (``schema.yaml`` + CSV/parquet) and checks ``load_dataset`` and
``write_prepared`` (the library) and ``mdctr data prepare`` (the CLI, one line, exit status 2). The data gate's
side of the same rules is in ``tests/validation/test_table_rules_gate.py``.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mdctr.config import ConfigError
from mdctr.data import DataError, load_dataset

RAW = pd.DataFrame(
    {
        "user": [7.0, 8.0, 7.0, 9.0, 8.0, 10.0],
        "item": [1, 2, 3, 1, 2, 3],
        "rating": [5, 1, 4, 2, 3, 5],
        "country": ["us", "de", "us", "de", "us", "de"],
    }
)
SCHEMA = {"name": "shop", "sparse": ["user", "item"], "label": "rating", "domain": "country"}


def write_table(root: Path, raw: pd.DataFrame = RAW, fmt: str = "csv", **over: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.yaml").write_text(yaml.safe_dump({**SCHEMA, "label_threshold": 4, **over}))
    if fmt == "csv":
        raw.to_csv(root / "events.csv", index=False)
    else:
        raw.to_parquet(root / "events.parquet", index=False)
    return root


def prepare_cli(root: Path, out: Path) -> tuple[int, str]:
    from mdctr.cli import app

    res = CliRunner().invoke(app, ["data", "prepare", "-d", "table", "-s", str(root), "-o", str(out)])
    return res.exit_code, res.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in output, output
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


# -- 1. ids: integers, or declared ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_float_ids_are_refused_naming_file_column_row_and_value(tmp_path: Path, fmt: str) -> None:
    """Before: ``7.0`` was accepted and became the vocabulary string "7.0"."""
    root = write_table(tmp_path / "t", fmt=fmt)
    with pytest.raises(DataError) as err:
        load_dataset("table", root)
    msg = str(err.value)
    assert (
        f"events.{fmt} sparse column 'user' holds floats at events.{fmt} rows 1, 2, 3, 4, 5 (and 1 more)"
        in msg
    )
    assert "e.g. 7.0" in msg and "types: {user: int}" in msg and "types: {user: str}" in msg
    code, out = prepare_cli(root, tmp_path / "out")
    assert_one_line_error(code, out, "sparse column 'user' holds floats", "e.g. 7.0")
    assert not (tmp_path / "out").exists()


def test_the_schema_check_refuses_float_ids_from_any_adapter(tmp_path: Path) -> None:
    """``FeatureSchema.check_table`` (every ``load_dataset``) holds the rule for all adapters, float elements
    of an object column included."""
    from mdctr.schema import SchemaError

    loaded = load_dataset("table", write_table(tmp_path / "t", types={"user": "int"}))
    table = loaded.table.assign(user=pd.Series(["a", "b", 7.5, "c", "d", "e"], dtype=object))
    with pytest.raises(
        SchemaError, match=r"src: sparse column 'user' holds floats at events\.csv row 3, e\.g\. 7\.5"
    ):
        loaded.schema.check_table(table, "src", raw=loaded.raw, row_labels=loaded.row_labels)
    loaded.schema.check_table(table.assign(user=list("abcdef")), "src", row_labels=loaded.row_labels)


def test_integral_floats_declared_int_become_integers(tmp_path: Path) -> None:
    from mdctr.data.prepare import write_prepared

    loaded = load_dataset("table", write_table(tmp_path / "t", types={"user": "int"}))
    assert loaded.table["user"].dtype == "int64" and loaded.table["user"].tolist() == [7, 8, 7, 9, 8, 10]
    spec = write_prepared(loaded, tmp_path / "out")
    assert spec.kinds["user"] == "int" and "7.0" not in spec.vocab["user"]


def test_a_fraction_in_a_column_declared_int_is_refused(tmp_path: Path) -> None:
    raw = RAW.assign(user=[7.0, 8.0, 7.5, 9.0, 8.0, 10.0])
    with pytest.raises(
        DataError,
        match=r"sparse column 'user' is declared int; found 1 non-integer value\(s\) at events\.csv row 3, e\.g\. 7\.5",
    ):
        load_dataset("table", write_table(tmp_path / "t", raw, types={"user": "int"}))


def test_ids_declared_str_keep_the_text_as_written(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", types={"user": "str"})
    (root / "events.csv").write_text(
        "user,item,rating,country\n007,1,5,us\n7.0,2,1,de\n7,3,4,us\n007,1,2,de\n"
    )
    loaded = load_dataset("table", root)
    assert loaded.table["user"].tolist() == ["007", "7.0", "7", "007"]


@pytest.mark.parametrize(
    ("types", "match"),
    [
        ({"rating": "int"}, r"types names 'rating', which is not a sparse column"),
        ({"user": "float"}, r"types\.user must be one of \['int', 'str'\], found 'float'"),
    ],
)
def test_bad_types_are_config_errors(tmp_path: Path, types: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset("table", write_table(tmp_path / "t", types=types))


# -- 2. duplicate rows ------------------------------------------------------------------------------------
def test_a_table_of_duplicate_rows_is_refused_naming_the_share_and_a_row(tmp_path: Path) -> None:
    """Before: a table of 100% duplicate rows was prepared without a word."""
    raw = pd.DataFrame({"user": [3] * 10, "item": [1] * 10, "rating": [5] * 10, "country": ["us"] * 10})
    root = write_table(tmp_path / "t", raw)
    with pytest.raises(DataError) as err:
        load_dataset("table", root)
    assert (
        "9 of 10 rows (90.00%) repeat an earlier row exactly; at most 1.00% may (max_duplicate_rate), "
        "e.g. events.csv row 2 repeats events.csv row 1: {'user': 3, 'item': 1, 'rating': 1, 'country': 0}"
    ) in str(err.value)
    code, out = prepare_cli(root, tmp_path / "out")
    assert_one_line_error(code, out, "9 of 10 rows (90.00%) repeat an earlier row")
    # the limit is declarable
    assert len(load_dataset("table", write_table(tmp_path / "t2", raw, max_duplicate_rate=0.9)).table) == 10


def test_duplicates_under_the_limit_pass(tmp_path: Path) -> None:
    raw = pd.DataFrame(
        {"user": list(range(200)) + [0], "item": [1] * 201, "rating": [5] * 201, "country": ["us"] * 201}
    )
    assert len(load_dataset("table", write_table(tmp_path / "t", raw)).table) == 201  # 1 of 201: 0.5%


@pytest.mark.parametrize("rate", [1.5, -0.1, "lots", True])
def test_a_bad_duplicate_limit_is_a_config_error(tmp_path: Path, rate: object) -> None:
    with pytest.raises(ConfigError, match=r"max_duplicate_rate must be a fraction in \[0, 1\]"):
        load_dataset("table", write_table(tmp_path / "t", types={"user": "int"}, max_duplicate_rate=rate))


# -- 3. the raw label's scale -----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [7, -3, 9, 0])
@pytest.mark.parametrize("rule", [{"ranges": {"rating": [1, 5]}}, {"allowed": {"rating": [1, 2, 3, 4, 5]}}])
def test_ratings_outside_the_declared_scale_are_refused(tmp_path: Path, bad: int, rule: dict) -> None:
    """Before: ``ranges: {rating: …}`` was refused as "not a sparse, dense or time column", and a rating of 9
    silently became a click."""
    raw = RAW.assign(rating=[5, 1, bad, 2, 3, 5])
    root = write_table(tmp_path / "t", raw, types={"user": "int"}, **rule)
    with pytest.raises(DataError) as err:
        load_dataset("table", root)
    assert "column 'rating' must be " in str(err.value)
    assert f"found 1 row(s) outside at events.csv row 3, e.g. {bad}" in str(err.value)
    code, out = prepare_cli(root, tmp_path / "out")
    assert_one_line_error(code, out, "column 'rating'", "events.csv row 3", f"e.g. {bad}")


def test_ratings_on_the_declared_scale_load_and_binarise(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", types={"user": "int"}, ranges={"rating": [1, 5]})
    loaded = load_dataset("table", root)
    assert loaded.table["rating"].tolist() == [1, 0, 1, 0, 0, 1]
    assert loaded.raw is not None and loaded.raw["rating"].tolist() == RAW["rating"].tolist()
    assert loaded.schema.raw_columns == ("rating",) and loaded.schema.raw_name("rating") == "rating (raw)"


def test_a_scale_on_a_label_without_threshold_is_a_config_error(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", types={"user": "int"}, ranges={"rating": [0, 1]})
    yml = yaml.safe_load((root / "schema.yaml").read_text())
    del yml["label_threshold"]
    (root / "schema.yaml").write_text(yaml.safe_dump(yml))
    with pytest.raises(ConfigError, match=r"ranges names the label 'rating', which must be 0/1 already"):
        load_dataset("table", root)


# -- 4. binary files are refused before pandas reads them ---------------------------------------------------
NUL_BYTES = 50 * 1024 * 1024


@pytest.mark.parametrize("name", ["events.csv", "events.parquet"])
def test_a_nul_filled_file_is_refused_at_once_in_bounded_memory(tmp_path: Path, name: str) -> None:
    """Before: pandas read such a file as one huge line (a 1 GB one: 7.5 GB of memory, 29 s, then "0 rows")."""
    root = write_table(tmp_path / "t")
    (root / "events.csv").unlink()
    with (root / name).open("wb") as f:
        f.truncate(NUL_BYTES)  # a sparse file: reads back as 50 MB of NUL bytes
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError) as err:
            load_dataset("table", root)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 2.0 and peak < 4 * 1024 * 1024, (seconds, peak)
    if name.endswith(".csv"):
        assert "events.csv is not a text (CSV) file: byte 0 is NUL (0x00)" in str(err.value)
    else:
        assert "events.parquet is not a parquet file: it starts with b'\\x00" in str(err.value)
        assert "(a file of NUL bytes?)" in str(err.value)


def test_nul_bytes_at_the_end_of_a_csv_are_found_too(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t")
    text = (root / "events.csv").read_bytes()
    (root / "events.csv").write_bytes(text + b"x" * 200_000 + b"\0" * 10)
    with pytest.raises(DataError, match=r"not a text \(CSV\) file: byte \d+ is NUL"):
        load_dataset("table", root)


def test_a_parquet_file_named_csv_and_a_truncated_parquet(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t", fmt="parquet")
    data = (root / "events.parquet").read_bytes()
    (root / "events.parquet").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"is not a parquet file: it starts with b'PAR1.* ends with"):
        load_dataset("table", root)
    (root / "events.parquet").unlink()
    (root / "events.csv").write_bytes(data)
    with pytest.raises(DataError, match=r"events\.csv is a parquet file .*name it \*\.parquet"):
        load_dataset("table", root)


def test_prepare_cli_refuses_a_nul_file_in_one_line(tmp_path: Path) -> None:
    root = write_table(tmp_path / "t")
    with (root / "events.csv").open("wb") as f:
        f.truncate(NUL_BYTES)
    code, out = prepare_cli(root, tmp_path / "out")
    assert_one_line_error(code, out, "events.csv is not a text (CSV) file")


# -- 5. a schema.yaml error is one line ---------------------------------------------------------------------
def test_prepare_cli_reports_a_schema_yaml_error_in_one_line(tmp_path: Path) -> None:
    code, out = prepare_cli(write_table(tmp_path / "t", labell="x"), tmp_path / "out")
    assert_one_line_error(code, out, "schema.yaml: unknown key(s) ['labell']")
