"""benchmarks/grid.py: variants as their own entries, the no-cap budget, and resuming a grid from its run records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# each test runs benchmarks/grid.py, which trains a grid (a minute or more on 2 cores)
pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "grid.py"

BASE = [
    "--dataset", "synthetic", "--models", "dnn,hamur", "--domains", "none,handcrafted", "--budget", "none",
    "--variants", json.dumps({"hamur": [{}, {"adapter_per_domain": False}]}),
    "--epochs", "1", "--workers", "1", "--batch-size", "1024",
]  # fmt: skip


def _grid(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, SCRIPT, *BASE, "--out", str(out), *extra], capture_output=True, text=True, env=env
    )


def _entries(out: Path) -> dict[str, dict]:
    return {e["entry"]: e for e in json.loads((out / "leaderboard.json").read_text())["entries"]}


def test_variants_resume_and_refuse_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    first = _grid(out, "--seeds", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.splitlines()[-1]) | {"wall_s": 0} == {
        "finished": 5, "read_back": 0, "planned": 5, "failed": 0, "wall_s": 0
    }  # fmt: skip
    entries = _entries(out)
    # dnn accepts only none; each hamur variant is its own entry, named by its overrides
    assert set(entries) == {
        "dnn/none",
        "hamur/none",
        "hamur/handcrafted",
        "hamur[adapter_per_domain=False]/none",
        "hamur[adapter_per_domain=False]/handcrafted",
    }
    assert all(e["width"] == 1 for e in entries.values())  # --budget none: default sizes
    shared, per_domain = entries["hamur[adapter_per_domain=False]/handcrafted"], entries["hamur/handcrafted"]
    assert shared["dense_params"] < per_domain["dense_params"]  # one adapter set instead of one per domain
    first_auc = {k: e["valid_auc_mean"] for k, e in entries.items()}

    # a second seed: the five finished runs are read back, not trained again, and keep their numbers
    second = _grid(out, "--seeds", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.splitlines()[-1])
    assert (summary["finished"], summary["read_back"], summary["planned"]) == (10, 5, 10)
    seed0 = json.loads((out / "runs" / "hamur-handcrafted-seed0.record.json").read_text())
    assert seed0["record"]["valid_auc"] == first_auc["hamur/handcrafted"]
    assert all(e["seeds"] == 2 for e in _entries(out).values())

    # a run trained under other model defaults (as after a default changed between sessions) is refused
    path = out / "runs" / "hamur-handcrafted-seed0.record.json"
    saved = json.loads(path.read_text())
    # the whole config, defaults included
    assert saved["settings"]["model_config"]["tower_batch"] == "sampled"
    assert saved["settings"]["train_config"] == {"lr": 1e-3, "weight_decay": 1e-5, "aux_loss_weight": 1.0}
    saved["settings"]["model_config"]["tower_batch"] = "routed"
    path.write_text(json.dumps(saved))
    stale = _grid(out, "--seeds", "2")
    assert stale.returncode != 0 and "ran with other settings (model_config:" in stale.stderr
    assert "Traceback" not in stale.stderr and "--rerun-stale" in stale.stderr
    # ... unless asked to train it again: that one run is trained with today's config, the other nine read back
    rerun = _grid(out, "--seeds", "2", "--rerun-stale")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "training again: " in rerun.stderr
    summary = json.loads(rerun.stdout.splitlines()[-1])
    assert (summary["finished"], summary["read_back"]) == (10, 9)
    assert json.loads(path.read_text())["settings"]["model_config"]["tower_batch"] == "sampled"

    # other training settings cannot be mixed into the same grid
    other = _grid(out, "--seeds", "2", "--epochs", "2")
    assert other.returncode != 0
    assert "ran with other settings (epochs: 1 there, 2 now)" in other.stderr


def test_a_records_store_carries_a_grid_to_a_fresh_output_directory(tmp_path: Path) -> None:
    store = tmp_path / "grid.runs.jsonl"
    grid = ("--models", "dnn,hamur", "--variants", "{}", "--domains", "none,mined", "--records", str(store))
    first = _grid(tmp_path / "a", "--seeds", "1", *grid)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = {row["tag"]: row for row in map(json.loads, store.read_text().splitlines())}
    assert list(lines) == ["dnn-none-seed0", "hamur-mined-seed0", "hamur-none-seed0"]
    assert lines["dnn-none-seed0"]["settings"]["epochs"] == 1 and lines["dnn-none-seed0"]["device"] == "cpu"
    # the run routed by the pre-trained miner records which codes it assigned; the others do not depend on it
    assert len(lines["hamur-mined-seed0"]["settings"]["miner_codes_sha256"]) == 16
    assert "miner_codes_sha256" not in lines["hamur-none-seed0"]["settings"]

    # elsewhere (another machine, a later session), only the committed store: seed 0 is not trained again
    second = _grid(tmp_path / "b", "--seeds", "2", *grid)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.splitlines()[-1])
    assert (summary["finished"], summary["read_back"]) == (6, 3)
    assert not (tmp_path / "b" / "runs" / "dnn-none-seed0.record.json").exists()
    assert len(store.read_text().splitlines()) == 6
    entry = _entries(tmp_path / "b")["dnn/none"]
    assert entry["seeds"] == 2 and entry["valid_auc_mean"] > 0.5

    # a smaller grid over the same store reads back what it needs and keeps the rest of the store
    subset = _grid(tmp_path / "d", "--seeds", "1", *grid, "--models", "dnn")
    assert subset.returncode == 0, subset.stderr[-3000:]
    assert json.loads(subset.stdout.splitlines()[-1])["read_back"] == 1
    assert len(store.read_text().splitlines()) == 6

    broken = _grid(tmp_path / "c", "--seeds", "1", *grid, "--epochs", "3")
    assert (
        broken.returncode != 0
        and "dnn-none-seed0 ran with other settings (epochs: 1 there, 3 now)" in broken.stderr
    )


def test_bad_options_fail_before_training_with_one_line(tmp_path: Path) -> None:
    bad_json = _grid(tmp_path / "g", "--seeds", "1", "--variants", "{hamur")
    assert bad_json.returncode != 0 and "--variants: not JSON" in bad_json.stderr
    unknown = _grid(tmp_path / "g", "--seeds", "1", "--valid-vs", "dnn/nonee")
    assert unknown.returncode != 0 and "--valid-vs 'dnn/nonee': not an entry of this grid" in unknown.stderr
    assert "Traceback" not in bad_json.stderr + unknown.stderr
    assert not (tmp_path / "g" / "runs").exists()  # nothing was trained
    bad_split = _grid(tmp_path / "g", "--seeds", "1", "--split-seed", "first")
    assert bad_split.returncode != 0 and "--split-seed: expected 'seed' or an integer" in bad_split.stderr
    bad_options = _grid(tmp_path / "g", "--seeds", "1", "--dataset-options", "[1]")
    assert bad_options.returncode != 0 and "--dataset-options: expected a JSON object" in bad_options.stderr


def test_each_seed_trains_on_its_own_split_unless_one_is_fixed(tmp_path: Path) -> None:
    """By default model seed s trains on split s (a miner per split); ``--split-seed N`` fixes one split."""
    grid = ("--models", "hamur", "--variants", "{}", "--domains", "mined", "--seeds", "2")
    small = ("--dataset-options", json.dumps({"rows": 4000, "vocab_size": 40}))
    per_seed = _grid(tmp_path / "a", *grid, *small)
    assert per_seed.returncode == 0, per_seed.stderr[-3000:]
    runs = {
        s: json.loads((tmp_path / "a" / "runs" / f"hamur-mined-seed{s}.json").read_text()) for s in (0, 1)
    }
    assert [runs[s]["split_seed"] for s in (0, 1)] == [0, 1]
    # the dataset options reached the adapter: 4,000 rows, so 400 test predictions
    assert np.load(tmp_path / "a" / "runs" / "hamur-mined-seed0.test_probs.npy").shape == (400,)
    assert (tmp_path / "a" / "miner" / "split0").is_dir() and (tmp_path / "a" / "miner" / "split1").is_dir()
    saved = [
        json.loads((tmp_path / "a" / "runs" / f"hamur-mined-seed{s}.record.json").read_text()) for s in (0, 1)
    ]
    assert all(r["settings"]["split_seed"] == "seed" for r in saved)
    assert all(r["settings"]["dataset_options"] == {"rows": 4000, "vocab_size": 40} for r in saved)
    # each split's own miner: its codes' fingerprint differs from the other split's
    assert saved[0]["settings"]["miner_codes_sha256"] != saved[1]["settings"]["miner_codes_sha256"]

    fixed = _grid(tmp_path / "b", *grid, *small, "--split-seed", "0")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    runs_fixed = [
        json.loads((tmp_path / "b" / "runs" / f"hamur-mined-seed{s}.json").read_text()) for s in (0, 1)
    ]
    assert [r["split_seed"] for r in runs_fixed] == [0, 0]
    assert not (tmp_path / "b" / "miner" / "split1").exists()
    # split 0 and seed 0 in both grids: the same run; seed 1 differs only by its split
    assert runs_fixed[0]["best_valid_auc"] == runs[0]["best_valid_auc"]
    # a fixed split 0 is what grids ran with before the option: the setting is not recorded, so old stores read back
    saved_fixed = json.loads((tmp_path / "b" / "runs" / "hamur-mined-seed1.record.json").read_text())
    assert "split_seed" not in saved_fixed["settings"]
