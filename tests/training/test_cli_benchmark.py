"""``mdctr benchmark`` runs the one grid runner (mdctr.steps.grid_run): worker processes, resume, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdctr.cli import app

runner = CliRunner()


@pytest.mark.slow  # two spawned worker processes each import torch and generate the data
def test_benchmark_on_two_workers_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    base = ["benchmark", "--dataset", "synthetic", "--models", "dnn,hamur", "--domains", "none,handcrafted"]
    base += ["--seeds", "1", "--batch-size", "2048", "--workers", "2", "--out", str(out)]
    first = runner.invoke(app, [*base, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    assert "# FLOP-matched leaderboard: synthetic" in first.output
    entries = {e["entry"] for e in json.loads((out / "leaderboard.json").read_text())["entries"]}
    assert entries == {"dnn/none", "hamur/none", "hamur/handcrafted"}
    assert json.loads((out / "skipped.json").read_text())[0]["domain_source"] == "handcrafted"
    grid = json.loads((out / "grid.json").read_text())
    assert (grid["runs_finished"], grid["runs_read_back"], grid["failed"]) == (3, 0, [])
    board = (out / "leaderboard.json").read_text()

    again = runner.invoke(app, [*base, "--epochs", "1"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "grid.json").read_text())["runs_read_back"] == 3  # nothing trained again
    assert (out / "leaderboard.json").read_text() == board

    other = runner.invoke(app, [*base, "--epochs", "2"])
    assert other.exit_code == 2 and "ran with other settings (epochs: 1 there, 2 now)" in other.output
    assert "Traceback" not in other.output
