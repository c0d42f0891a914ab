"""The Great Expectations gate on tiny ML-1M-format files and their broken variants."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mdctr.data import load_dataset
from mdctr.data.ml1m import SCHEMA
from mdctr.validation import ValidationResult, suite_specs, validate_dataset, validate_table
from mdctr.validation.gate import DOMAIN_ROWS_COL, DUPLICATE_COL

USERS = "1::F::1::10::48067\n2::M::25::16::70072\n3::M::35::15::55117\n4::F::56::7::02460\n"
MOVIES = "1::Toy Story (1995)::Animation|Children's\n2::Jumanji (1995)::Adventure\n3::Heat (1995)::Action\n"


def _ratings(n: int = 30) -> list[str]:
    return [f"{1 + i % 4}::{1 + i % 3}::{1 + i % 5}::{978300000 + i}" for i in range(n)]


def write_ml1m(root: Path, ratings: list[str] | None = None, **overrides: str) -> Path:
    """A tiny ML-1M directory; ``overrides`` replace whole files (name without ``.dat``)."""
    d = root / "ml-1m"
    d.mkdir(parents=True, exist_ok=True)
    texts = {
        "ratings": "\n".join(ratings or _ratings()) + "\n",
        "users": USERS,
        "movies": MOVIES,
        **overrides,
    }
    for name, text in texts.items():
        (d / f"{name}.dat").write_text(text)
    return root


@pytest.fixture(scope="module")
def good_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return load_dataset("ml-1m", write_ml1m(tmp_path_factory.mktemp("ml1m"))).table


def _check(table: pd.DataFrame, report_dir: Path, schema=SCHEMA) -> ValidationResult:
    """Validate a (modified) canonical table, with valid raw ratings beside it."""
    return validate_table(table, schema, report_dir, raw=pd.DataFrame({"rating": [3] * len(table)}))


def _failed(result: ValidationResult) -> dict[tuple[str, str], str]:
    return {(o.type, o.column): o.message for o in result.results if not o.success}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_suite_is_derived_from_the_schema() -> None:
    specs = suite_specs(SCHEMA)
    exist = {s.kwargs["column"] for s in specs if s.type == "expect_column_to_exist"}
    not_null = {s.kwargs["column"] for s in specs if s.type == "expect_column_values_to_not_be_null"}
    assert exist == not_null == set(SCHEMA.columns)
    # every value rule of the schema is an expectation (ranges and allowed sets), raw-only columns included
    ranges = {
        s.kwargs["column"]: {k: v for k, v in s.kwargs.items() if k != "column"}
        for s in specs
        if s.type == "expect_column_values_to_be_between" and s.kwargs["column"] in SCHEMA.value_rules
    }
    assert ranges == {
        "user_id": {"min_value": 1},
        "movie_id": {"min_value": 1},
        "occupation": {"min_value": 0, "max_value": 20},
        "timestamp": {"min_value": 0},
    }
    sets = {
        s.kwargs["column"]: s.kwargs["value_set"]
        for s in specs
        if s.type == "expect_column_values_to_be_in_set" and s.kwargs["column"] in SCHEMA.value_rules
    }
    assert sets == {"rating": [1, 2, 3, 4, 5], "age": [1, 18, 25, 35, 45, 50, 56], "gender": ["F", "M"]}
    derived = {s.kwargs["column"] for s in specs if "column" in s.kwargs} - set(SCHEMA.columns)
    assert derived == {DUPLICATE_COL, DOMAIN_ROWS_COL, "rating"}


def test_valid_data_passes_and_writes_a_self_contained_report(tmp_path: Path) -> None:
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src"), tmp_path / "report")
    assert result.success, result.failures
    assert result.n_failed == 0 and result.rows == 30
    page = result.html_path.read_text()
    # self-contained: no scripts, and the only link is to the GX Data Docs built beside it
    assert "<style>" in page and "PASSED" in page and "<script" not in page
    assert page.count("href=") == 1 and "href='data_docs/index.html'" in page
    assert (result.html_path.parent / "data_docs" / "index.html").is_file()
    assert '"success": true' in result.json_path.read_text()


def test_missing_column(good_table: pd.DataFrame, tmp_path: Path) -> None:
    result = _check(good_table.drop(columns=["genre"]), tmp_path)
    assert not result.success
    assert ("expect_column_to_exist", "genre") in _failed(result)


def test_wrong_dtype(good_table: pd.DataFrame, tmp_path: Path) -> None:
    table = good_table.assign(age=good_table["age"].astype(str))
    failed = _failed(_check(table, tmp_path))
    assert ("expect_column_values_to_be_in_type_list", "age") in failed


def test_nan_labels(good_table: pd.DataFrame, tmp_path: Path) -> None:
    label = good_table["label"].astype("float64")
    label.iloc[[0, 3]] = np.nan
    failed = _failed(_check(good_table.assign(label=label), tmp_path))
    assert failed[("expect_column_values_to_not_be_null", "label")] == (
        "2 row(s) (6.67%) with a missing value at row 1, row 4; expected none"
    )


def test_nan_rating_in_the_raw_file(tmp_path: Path) -> None:
    ratings = [*_ratings(), "1::2::NaN::978309999"]
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src", ratings), tmp_path / "r")
    assert result.failures == (
        f"load_dataset [(files)]: ml-1m: {tmp_path / 'src' / 'ml-1m' / 'ratings.dat'} column 'rating' expects "
        "integers; found 1 bad line(s) at ratings.dat line 31, e.g. 'NaN'",
    )


def test_empty_file(tmp_path: Path) -> None:
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src", ratings=[""]), tmp_path / "r")
    assert [o.type for o in result.results] == ["load_dataset"]
    assert "ratings.dat" in result.failures[0] and "empty" in result.failures[0]


def test_truncated_file(tmp_path: Path) -> None:
    ratings = [*_ratings(), "4::3:"]  # the download stopped mid-line
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src", ratings), tmp_path / "r")
    assert not result.success and "ratings.dat" in result.failures[0]


def test_unknown_domain_value(good_table: pd.DataFrame, tmp_path: Path) -> None:
    domain = good_table["domain"].copy()
    domain.iloc[0] = 7
    failed = _failed(_check(good_table.assign(domain=domain), tmp_path))
    assert "[7]" in failed[("expect_column_values_to_be_in_set", "domain")]


def test_duplicated_rows(tmp_path: Path) -> None:
    ratings = _ratings()
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src", ratings + ratings[:3]), tmp_path / "r")
    failed = _failed(result)
    assert failed[("expect_column_values_to_be_in_set", DUPLICATE_COL)].startswith(
        "3 of 33 rows (9.09%) repeat an earlier row exactly at ratings.dat lines 31, 32, 33; at most 1.00% may"
    )


def test_negative_ids(tmp_path: Path) -> None:
    users = USERS + "-5::M::25::3::10001\n"
    ratings = [*_ratings(), "-5::1::4::978309999"]
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src", ratings, users=users), tmp_path / "r")
    failed = _failed(result)
    assert "[-5]" in failed[("expect_column_values_to_be_between", "user_id")]


def test_corrupted_zip(tmp_path: Path) -> None:
    src = tmp_path / "epinions"
    src.mkdir()
    (src / "epinions.zip").write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    result = validate_dataset("epinions", src, tmp_path / "r")
    assert not result.success and "epinions.zip" in result.failures[0] and "zip" in result.failures[0]


def test_wrong_separator(tmp_path: Path) -> None:
    ratings = [line.replace("::", "\t") for line in _ratings()]
    result = validate_dataset("ml-1m", write_ml1m(tmp_path / "src", ratings), tmp_path / "r")
    assert not result.success and "separator" in result.failures[0]


def test_dense_value_out_of_range(good_table: pd.DataFrame, tmp_path: Path) -> None:
    age = good_table["age"].copy()
    age.iloc[2] = 200.0
    failed = _failed(_check(good_table.assign(age=age), tmp_path))
    assert "at row 3;" in failed[("expect_column_values_to_be_in_set", "age")]
    assert "[200.0]" in failed[("expect_column_values_to_be_in_set", "age")]


def test_too_few_rows_in_a_domain(good_table: pd.DataFrame, tmp_path: Path) -> None:
    strict = dataclasses.replace(SCHEMA, min_domain_rows=10)
    failed = _failed(_check(good_table, tmp_path, strict))
    assert ("expect_column_values_to_be_between", DOMAIN_ROWS_COL) in failed


def test_a_failure_leaves_earlier_reports_alone(tmp_path: Path) -> None:
    good = validate_dataset("ml-1m", write_ml1m(tmp_path / "good"), tmp_path / "report-good")
    before = _tree_bytes(tmp_path / "report-good")
    bad = validate_dataset("ml-1m", write_ml1m(tmp_path / "bad", ratings=[""]), tmp_path / "report-bad")
    assert good.success and not bad.success
    assert _tree_bytes(tmp_path / "report-good") == before


def test_cli_prints_each_expectation_and_fails_on_violation(tmp_path: Path) -> None:
    from mdctr.cli import app

    src = write_ml1m(
        tmp_path / "src", [*_ratings(), "-5::1::4::978309999"], users=USERS + "-5::M::25::3::1\n"
    )
    out = CliRunner().invoke(
        app,
        ["data", "validate", "--dataset", "ml-1m", "--source", str(src), "--report-dir", str(tmp_path / "r")],
    )
    assert out.exit_code == 1
    assert "FAIL expect_column_values_to_be_between [user_id]" in out.output
    assert "PASS expect_column_to_exist [label]" in out.output
