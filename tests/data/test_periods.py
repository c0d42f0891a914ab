"""Periods of a time split (issue #26 item 1): the eval period, the training window, the refusals, the
prepare step's parameters, and scripts/ml1m-periods."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mdctr.data.encode import parse_span, split_table
from mdctr.data.synthetic import generate
from mdctr.schema import FeatureSchema, SchemaError

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400
SCHEMA = FeatureSchema(
    name="daily",
    sparse=("user",),
    dense=("price",),
    label="label",
    domain="domain",
    domain_names=("a", "b"),
    time="ts",
)


def _days(n_days: int, per_day: int = 10) -> pd.DataFrame:
    """``per_day`` rows on each of ``n_days`` days (ts = day·86400 + row), ids and labels cycling."""
    ts = np.array([d * DAY + i for d in range(n_days) for i in range(per_day)])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ts))  # rows arrive out of time order
    n = len(ts)
    return pd.DataFrame(
        {
            "user": np.arange(n) % 7,
            "price": np.linspace(0, 1, n),
            "label": np.arange(n) % 2,
            "domain": np.arange(n) % 2,
            "ts": ts[order],
        }
    )


def test_eval_period_is_the_newest_span_halved_into_valid_and_test() -> None:
    table = _days(10)
    parts = split_table(table, SCHEMA, kind="time", eval_period="2d")
    # t_max = day 9 + 9 s; the last 2 days of time start at day 7 + 9 s
    eval_rows = table[table.ts >= 9 * DAY + 9 - 2 * DAY]
    assert len(parts["valid"]) + len(parts["test"]) == len(eval_rows) == 21
    assert len(parts["valid"]) == 10 and len(parts["test"]) == 11
    assert parts["valid"].ts.max() <= parts["test"].ts.min()  # valid = older half
    assert parts["train"].ts.max() < parts["valid"].ts.min()
    assert len(parts["train"]) == len(table) - 21  # default window: every older row


def test_train_window_is_the_span_before_the_eval_period() -> None:
    table = _days(10)
    parts = split_table(table, SCHEMA, kind="time", eval_period="2d", train_window="3d")
    start = parts["valid"].ts.min()
    assert parts["train"].ts.min() >= start - 3 * DAY
    assert len(parts["train"]) == 30  # three whole days before the eval period
    pct = split_table(table, SCHEMA, kind="time", eval_period="10%", train_window="50%")
    assert len(pct["train"]) < len(table) * 0.6 and len(pct["valid"]) > 0


def test_periods_refuse_random_split_and_data_without_time() -> None:
    with pytest.raises(SchemaError, match=r"--eval-period selects periods by time.*'random' split"):
        split_table(_days(5), SCHEMA, kind="random", eval_period="1d")
    untimed = generate(rows=200, seed=0)
    assert not untimed.schema.time
    with pytest.raises(SchemaError, match=r"--train-window needs time-stamped data.*no time column"):
        split_table(untimed.table, untimed.schema, kind="time", train_window="1d")


@pytest.mark.parametrize("text", ["7", "1y", "-2d", "0h", "100%", "abc"])
def test_bad_spans_name_the_option(text: str) -> None:
    with pytest.raises(SchemaError, match="--eval-period"):
        parse_span(text, option="--eval-period")


def test_spans_parse() -> None:
    assert parse_span("36h").seconds == 36 * 3600
    assert parse_span("10%").fraction == pytest.approx(0.1)
    assert parse_span("1.5d").length(0) == 1.5 * DAY


def test_empty_split_is_named() -> None:
    with pytest.raises(SchemaError, match=r"leave split\(s\) \['train'\] empty"):
        split_table(_days(3), SCHEMA, kind="time", eval_period="5d")


def test_prepare_step_writes_the_periods(tmp_path: Path) -> None:
    from mdctr.data.encode import FeatureSpec
    from mdctr.steps.prepare_data import PrepareConfig, prepare_data

    src = tmp_path / "daily"
    src.mkdir()
    _days(10).to_csv(src / "rows.csv", index=False)
    meta = {
        "name": "daily",
        "sparse": ["user"],
        "dense": ["price"],
        "label": "label",
        "domain": "domain",
        "time": "ts",
    }
    (src / "schema.yaml").write_text(yaml.safe_dump(meta))
    out = prepare_data(
        source=src,
        out_dir=tmp_path / "prepared",
        config=PrepareConfig(dataset="table", split="time", train_window="3d", eval_period="2d"),
    )
    assert out.rows == {"train": 30, "valid": 10, "test": 11}
    spec = FeatureSpec.load(tmp_path / "prepared" / "feature_spec.json")
    assert spec.meta["train_window"] == "3d" and spec.meta["eval_period"] == "2d"


def _script() -> Any:
    loader = importlib.machinery.SourceFileLoader("ml1m_periods", str(ROOT / "scripts" / "ml1m-periods"))
    spec = importlib.util.spec_from_loader("ml1m_periods", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_ml1m_periods_script_writes_four_growing_periods(tmp_path: Path, datasets_dir: Path) -> None:
    from mdctr.data import load_dataset

    records = _script().write_periods(datasets_dir, tmp_path, periods=4, rows=20_000)
    names = [r["table"] for r in records]
    assert names == ["period1", "period1+2", "period1+2+3", "period1+2+3+4"]
    rows = [r["rows"] for r in records]
    assert rows == sorted(rows) and len(set(rows)) == 4 and rows[-1] == 20_000
    assert json.loads((tmp_path / "periods.json").read_text()) == records
    # each is a loadable table; its --eval-period selects exactly its newest period (up to timestamp ties)
    second = load_dataset("table", tmp_path / "period1+2")
    assert second.schema.name == "ml-1m-periods" and len(second.table) == rows[1]
    parts = split_table(second.table, second.schema, kind="time", eval_period=records[1]["eval_period"])
    newest = len(parts["valid"]) + len(parts["test"])
    assert abs(newest - records[1]["newest_period_rows"]) <= 5
    first = load_dataset("table", tmp_path / "period1")
    assert first.table["timestamp"].max() <= second.table["timestamp"].iloc[-1]


@pytest.mark.parametrize(
    "command", [["train", "-d", "ml-1m", "-m", "dnn", "--domains", "none"], ["pipeline", "run"]]
)
def test_cli_refuses_periods_with_a_random_split(command: list[str]) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    result = CliRunner().invoke(app, [*command, "--split", "random", "--eval-period", "7d"])
    assert result.exit_code != 0
    assert "--eval-period selects periods by time" in result.output
    bad = CliRunner().invoke(app, [*command, "--train-window", "7 parsecs"])
    assert bad.exit_code != 0 and "--train-window '7 parsecs' is not a span" in bad.output


@pytest.mark.integration
def test_ml1m_periods_script_makes_one_dvc_version_per_period(
    tmp_path: Path, datasets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    for key, value in (
        ("GIT_AUTHOR_NAME", "t"),
        ("GIT_AUTHOR_EMAIL", "t@x"),
        ("GIT_COMMITTER_NAME", "t"),
        ("GIT_COMMITTER_EMAIL", "t@x"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    script = _script()
    out = tmp_path / "periods"
    records = script.write_periods(datasets_dir, out, periods=4, rows=2_000)
    commits = script.version_periods(out, records, repo, push=False)
    assert len(set(commits)) == 4
    tags = subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    assert tags == [f"ml-1m-period-{i}" for i in range(1, 5)]
    # each tag's data.dvc names other bytes, and the newest holds the whole table under data/table
    md5s = {
        subprocess.run(
            ["git", "show", f"{t}:data.dvc"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
        for t in tags
    }
    assert len(md5s) == 4
    table = pd.read_parquet(repo / "data" / "table" / "ml1m.parquet")
    assert len(table) == records[-1]["rows"] == 2_000
