"""The selection options on the command line (issue #23 item 6): ``mdctr train``/``benchmark`` take
``--patience``, ``--early-stop-metric`` and ``--calibrate``; ``mdctr pipeline run`` merges them into the train
options (checked before any task starts); the benchmark grid (``mdctr.steps.grid``) records a non-default metric
in its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.config import ConfigError

runner = CliRunner()


def test_train_takes_the_selection_flags() -> None:
    args = ["train", "--dataset", "synthetic", "--model", "dnn", "--domains", "none", "--epochs", "2"]
    flags = ["--patience", "1", "--early-stop-metric", "logloss", "--calibrate", "temperature", "--json"]
    result = runner.invoke(app, [*args, *flags])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["early_stop_metric"] == "logloss"
    assert summary["calibration"]["method"] == "temperature"
    assert summary["base_rate_logloss"] > 0 and summary["valid_logloss"] > 0


@pytest.mark.parametrize(
    ("flag", "message"),
    [(["--early-stop-metric", "accuracy"], "early_stop_metric must be one of"),
     (["--calibrate", "platt"], "calibrate must be one of")],
)  # fmt: skip
def test_train_rejects_an_unknown_metric_or_calibration_in_one_line(flag: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["train", "--dataset", "synthetic", "--model", "dnn", "--domains", "none", *flag]
    )
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_pipeline_run_merges_the_flags_into_train_options() -> None:
    from mdctr.cli.pipeline import _with_train_flags

    merged = _with_train_flags({"batch_size": 512}, patience=4, early_stop_metric="logloss", calibrate=None)
    assert merged == {"batch_size": 512, "patience": 4, "early_stop_metric": "logloss"}
    assert _with_train_flags({"patience": 4}, patience=4) == {"patience": 4}  # the same value twice is fine
    with pytest.raises(ConfigError, match="--patience 3 contradicts --train-options patience=4"):
        _with_train_flags({"patience": 4}, patience=3)
    with pytest.raises(ConfigError, match="early_stop_metric must be one of"):
        _with_train_flags({}, early_stop_metric="accuracy")


def test_grid_records_a_non_default_early_stop_metric_only() -> None:
    from mdctr.steps.grid import GridConfig, check_settings, grid_settings
    from mdctr.training import TrainConfig

    def settings(early_stop_metric: str) -> dict:
        train = TrainConfig(epochs=1, patience=3, batch_size=1024, early_stop_metric=early_stop_metric)
        return grid_settings(
            GridConfig("synthetic", Path("unused"), budget="none", split_seed="0", train=train)
        )

    default = settings("auc")
    assert "early_stop_metric" not in default  # stores written before the option still read back
    logloss = settings("logloss")
    assert logloss == {**default, "early_stop_metric": "logloss"}
    with pytest.raises(ValueError, match="early_stop_metric"):  # and the two are never mixed in one grid
        check_settings(default, logloss, "run.record.json")


def test_pipeline_run_summary_warns_about_entries_worse_than_the_base_rate(tmp_path: Path) -> None:
    from mdctr.cli.pipeline import _compact_leaderboard

    tables = tmp_path / "evaluate" / "tables"
    tables.mkdir(parents=True)
    entry = {"rank": 1, "valid_auc_mean": 0.8, "auc_mean": 0.79, "auc_ci_low": None, "flops": 1.0}
    entries = [
        {
            **entry,
            "entry": "star/none",
            "logloss_mean": 0.549,
            "base_logloss": 0.5235,
            "worse_than_base": True,
        },
        {**entry, "entry": "dnn/none", "logloss_mean": 0.5, "base_logloss": 0.5235, "worse_than_base": False},
    ]
    (tables / "leaderboard.json").write_text(
        json.dumps({"attrs": {"baseline": "dnn/none"}, "entries": entries})
    )
    rows = _compact_leaderboard(tables / "leaderboard.json")
    assert rows[-1] == "  ⚠ test logloss worse than the base-rate predictor: star/none (0.5490 vs 0.5235)"
