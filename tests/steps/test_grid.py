"""The one benchmark grid runner (mdctr.steps.grid, mdctr.steps.grid_run): plan, train, resume, deadline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mdctr.config import ConfigError
from mdctr.steps.grid import GridConfig, StaleRunsError, plan_grid
from mdctr.steps.grid_run import run_grid
from mdctr.training import TrainConfig

#: 1,500 rows, 2 domains: a run trains in well under a second
SMALL = {"rows": 1500, "num_sparse": 3, "num_dense": 1, "vocab_size": 30, "num_domains": 2}


def _config(out: Path, models: list[str], sources: list[str], **options: Any) -> GridConfig:
    """A grid on the small synthetic data, one split for every seed, one epoch, in this process."""
    train = options.pop("train", TrainConfig(epochs=1, batch_size=256, device="cpu"))
    options = {"budget": "model:dnn", "dataset_options": SMALL, "split_seed": "0", **options}
    return GridConfig(
        dataset="synthetic", out=out, models=models, domain_sources=sources, train=train, **options
    )


def test_a_second_grid_trains_nothing_and_reproduces_the_leaderboard(tmp_path: Path) -> None:
    config = _config(tmp_path, ["dnn", "hamur"], ["none", "handcrafted"], seeds=2)
    first = run_grid(config)
    assert first.summary() | {"wall_s": 0} == {
        "finished": 6,
        "read_back": 0,
        "planned": 6,
        "failed": 0,
        "wall_s": 0,
    }
    board = (tmp_path / "leaderboard.json").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}

    again = run_grid(config)
    assert (again.summary()["finished"], again.read_back) == (6, 6)
    assert {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()
    } == stamps  # nothing rewritten
    assert (tmp_path / "leaderboard.json").read_text() == board
    pd.testing.assert_frame_equal(again.leaderboard, first.leaderboard)

    # without resume every run is trained again
    fresh = run_grid(dataclasses.replace(config, resume=False))
    assert (fresh.summary()["finished"], fresh.read_back) == (6, 0)


def test_a_resume_with_other_settings_is_refused_naming_each_run(tmp_path: Path) -> None:
    run_grid(_config(tmp_path, ["dnn"], ["none"]))
    other = _config(tmp_path, ["dnn"], ["none"], train=TrainConfig(epochs=2, batch_size=256, device="cpu"))
    with pytest.raises(StaleRunsError) as refused:
        run_grid(other)
    message = str(refused.value)
    assert "1 finished run(s) ran with other settings" in message
    assert "dnn-none-seed0.record.json ran with other settings (epochs: 1 there, 2 now)" in message
    assert "--rerun-stale" in message and "--no-resume" in message
    # asked to, it trains the run again with the new settings, replacing the stored one
    rerun = run_grid(dataclasses.replace(other, rerun_stale=True))
    assert (rerun.summary()["finished"], rerun.read_back) == (1, 0)
    saved = json.loads((tmp_path / "runs" / "dnn-none-seed0.record.json").read_text())
    assert saved["settings"]["epochs"] == 2


def test_runs_the_deadline_leaves_are_listed_not_dropped(tmp_path: Path) -> None:
    config = _config(tmp_path, ["dnn", "hamur"], ["none"], seeds=1)
    run_grid(config)
    late = run_grid(dataclasses.replace(config, seeds=2, deadline_s=0.0))
    # seed 0 is read back; no seed-1 run starts, and each is listed
    assert late.summary() | {"wall_s": 0} == {
        "finished": 2,
        "read_back": 2,
        "planned": 4,
        "failed": 0,
        "wall_s": 0,
    }
    assert late.skipped_by_deadline == [[1, "dnn", "{}", "none"], [1, "hamur", "{}", "none"]]
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert grid["skipped_by_deadline"] == late.skipped_by_deadline and grid["runs_planned"] == 4
    assert set(late.leaderboard["seeds"]) == {1}  # the leaderboard of what finished says so


def test_a_bad_split_seed_or_seed_count_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--split-seed: expected 'seed' or an integer >= 0, found 'first'"):
        _config(tmp_path, ["dnn"], ["none"], split_seed="first")
    with pytest.raises(ConfigError, match="seeds must be at least 1"):
        _config(tmp_path, ["dnn"], ["none"], seeds=0)
    assert plan_grid(_config(tmp_path, ["dnn"], ["none"], seeds=3)).names == ["dnn/none"]
    assert not tmp_path.joinpath("runs").exists()
