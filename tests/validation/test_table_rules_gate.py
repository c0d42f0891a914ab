"""One set of table rules (issue #22, item 5): ``mdctr data validate``, the pipeline's validate step,
``load_dataset`` and ``mdctr data prepare`` refuse the same tables, naming the same column, rows and values.

The loading side alone is tested in ``tests/data/test_table_rules.py``; here each broken table goes through the
GX gate (library, pipeline step, CLI) and through ``load_dataset``, and both must refuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mdctr.config import ConfigError
from mdctr.data import load_dataset
from mdctr.schema import SchemaError
from mdctr.steps.validate_data import DataValidationError, ValidateConfig, validate_data
from mdctr.validation import suite_specs, validate_dataset

RAW = pd.DataFrame(
    {
        "user": [7, 8, 7, 9, 8, 10],
        "item": [1, 2, 3, 1, 2, 3],
        "rating": [5, 1, 4, 2, 3, 5],
        "country": ["us", "de", "us", "de", "us", "de"],
    }
)
SCHEMA = {
    "name": "shop",
    "sparse": ["user", "item"],
    "label": "rating",
    "domain": "country",
    "label_threshold": 4,
    "ranges": {"rating": [1, 5]},
}


def write_table(root: Path, raw: pd.DataFrame = RAW, **over: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.yaml").write_text(yaml.safe_dump({**SCHEMA, **over}))
    raw.to_csv(root / "events.csv", index=False)
    return root


def nul_file(root: Path) -> None:
    with (root / "events.csv").open("wb") as f:
        f.truncate(50 * 1024 * 1024)


# name → (how to break the table, what loading says, what the gate says)
CASES: dict[str, tuple[dict, list[str], list[str]]] = {
    "float-ids": (
        {"raw": RAW.assign(user=[7.0, 8.5, 7.0, 9.0, 8.0, 10.0])},
        [
            "events.csv sparse column 'user' holds floats at events.csv rows 1, 2, 3, 4, 5 (and 1 more), e.g. 7.0"
        ],
        ["load_dataset [(files)]", "events.csv sparse column 'user' holds floats at events.csv rows 1, 2"],
    ),
    **{
        f"rating-{bad}": (
            {"raw": RAW.assign(rating=[5, 1, 4, 2, 3, 5][:row] + [bad] + [5, 1, 4, 2, 3, 5][row + 1 :])},
            [
                f"column 'rating' must be within [1, 5]; found 1 row(s) outside at events.csv row {row + 1}, e.g. {bad}"
            ],
            [
                f"expect_column_values_to_be_between [rating (raw)]: 1 row(s) (16.7%) unexpected at events.csv "
                f"row {row + 1}; expected {{'min_value': 1, 'max_value': 5}}; e.g. [{bad}]"
            ],
        )
        for bad, row in ((7, 2), (-3, 3), (9, 0), (0, 5))
    },
    "all-duplicates": (
        {"raw": pd.DataFrame({"user": [3] * 8, "item": [1] * 8, "rating": [5] * 8, "country": ["us"] * 8})},
        [
            "7 of 8 rows (87.50%) repeat an earlier row exactly; at most 1.00% may",
            "e.g. events.csv row 2 repeats",
        ],
        [
            "[_mdctr_duplicate_row]: 7 of 8 rows (87.5%) repeat an earlier row exactly at events.csv rows 2, 3, 4, "
            "5, 6 (and 2 more); at most 1.00% may (max_duplicate_rate)"
        ],
    ),
    "nul-file": (
        {"nul": True},
        ["events.csv is not a text (CSV) file: byte 0 is NUL (0x00)"],
        ["load_dataset [(files)]", "events.csv is not a text (CSV) file: byte 0 is NUL (0x00)"],
    ),
    "label-not-binary": (
        {"raw": RAW.assign(rating=[1, 0, 3, 0, 1, 1]), "yaml": {"label_threshold": None, "ranges": None}},
        [
            "events.csv label column 'rating' must be 0/1; found 1 row(s) with other values at events.csv row 3, e.g. 3"
        ],
        ["load_dataset [(files)]", "label column 'rating' must be 0/1; found 1 row(s) with other values"],
    ),
    "schema-yaml-typo": (
        {"yaml": {"labell": "x"}},
        ["schema.yaml: unknown key(s) ['labell']"],
        ["load_dataset [(files)]", "schema.yaml: unknown key(s) ['labell']"],
    ),
}


def build(case: str, root: Path) -> Path:
    how = CASES[case][0]
    write_table(root, how.get("raw", RAW), **how.get("yaml", {}))
    if how.get("nul"):
        nul_file(root)
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_the_gate_and_loading_refuse_the_same_tables(case: str, tmp_path: Path) -> None:
    """Before: float ids, 100% duplicates and ratings of 7/-3/9/0 loaded (prepare), the ratings passed the
    gate too, and a schema.yaml typo made the gate raise instead of reporting."""
    root = build(case, tmp_path / "src")
    _, on_load, on_gate = CASES[case]
    with pytest.raises((SchemaError, ConfigError)) as err:
        load_dataset("table", root)
    for needle in on_load:
        assert needle in str(err.value), (needle, str(err.value))
    result = validate_dataset("table", root, tmp_path / "report")
    assert not result.success and len(result.failures) == 1, result.failures
    for needle in on_gate:
        assert needle in result.failures[0], (needle, result.failures[0])
    report = json.loads(result.json_path.read_text())
    assert report["success"] is False and report["n_failed"] == result.n_failed


@pytest.mark.parametrize("case", ["rating-9", "all-duplicates", "schema-yaml-typo"])
def test_the_pipeline_validate_step_fails_with_the_same_message(case: str, tmp_path: Path) -> None:
    root = build(case, tmp_path / "src")
    with pytest.raises(DataValidationError) as err:
        validate_data(
            source=root,
            html_path=tmp_path / "kfp.html",
            results_dir=tmp_path / "results",
            config=ValidateConfig(dataset="table"),
        )
    assert CASES[case][2][-1] in str(err.value)
    assert (tmp_path / "kfp.html").is_file()


def test_the_raw_label_rule_is_an_expectation_of_the_suite(tmp_path: Path) -> None:
    loaded = load_dataset("table", write_table(tmp_path / "src"))
    specs = [(s.type, s.kwargs) for s in suite_specs(loaded.schema)]
    assert (
        "expect_column_values_to_be_between",
        {"column": "rating (raw)", "min_value": 1, "max_value": 5},
    ) in specs
    assert validate_dataset("table", tmp_path / "src", tmp_path / "report").success


def test_a_declared_duplicate_limit_reaches_the_gate(tmp_path: Path) -> None:
    raw = pd.DataFrame({"user": [3] * 4 + [4], "item": [1] * 5, "rating": [5] * 5, "country": ["us"] * 5})
    root = write_table(tmp_path / "src", raw, max_duplicate_rate=0.75)
    assert validate_dataset("table", root, tmp_path / "report").success  # 3 of 5 = 60%
    assert len(load_dataset("table", root).table) == 5


def run_validate_cli(root: Path, report: Path) -> subprocess.CompletedProcess[str]:
    """``mdctr data validate`` as a user runs it (its own logging set-up, stdout and stderr)."""
    exe = Path(sys.executable).with_name("mdctr")
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    return subprocess.run(
        [str(exe), "data", "validate", "-d", "table", "-s", str(root), "--report-dir", str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("schema-yaml-typo", "unknown key(s) ['labell']"),
        ("float-ids", "sparse column 'user' holds floats"),
        ("label-not-binary", "label column 'rating' must be 0/1"),
    ],
)
def test_validate_cli_prints_a_load_error_once_on_one_line_and_writes_a_report(
    case: str, needle: str, tmp_path: Path
) -> None:
    """Before: a schema.yaml error printed a traceback and wrote no report; a load error was printed twice
    (logged at ERROR, then the FAIL line; the issue saw it three times)."""
    proc = run_validate_cli(build(case, tmp_path / "src"), tmp_path / "report")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert out.count(needle) == 1, out
    line = next(line for line in out.splitlines() if needle in line)
    assert line.startswith("FAIL load_dataset [(files)]")
    report = json.loads((tmp_path / "report" / "validation_report.json").read_text())
    assert report["success"] is False and needle in report["results"][0]["message"]


def test_validate_cli_names_an_unknown_dataset_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    res = CliRunner().invoke(app, ["data", "validate", "-d", "nosuch", "-s", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "error: unknown dataset 'nosuch'" in res.output
