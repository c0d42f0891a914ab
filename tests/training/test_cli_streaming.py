"""``mdctr train --prepared DIR --streaming …``: in one process and under torchrun (what a TrainJob runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.data.prepare import write_prepared
from mdctr.data.synthetic import generate

runner = CliRunner()
ARGS = ["--model", "hamur", "--domains", "handcrafted", "--epochs", "2", "--batch-size", "256", "--json"]


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "prepared"
    write_prepared(generate(rows=4000, num_sparse=3, num_dense=2, vocab_size=40, num_domains=3, seed=4), out)
    return out


def _summary(output: str) -> dict:
    return json.loads(output[output.index("{") :])


@pytest.mark.slow  # two `mdctr train` subprocesses
def test_streaming_and_in_memory_train_on_the_same_prepared_data(prepared_dir: Path, tmp_path: Path) -> None:
    results = {}
    for mode in ("on", "off"):
        out = tmp_path / mode
        result = runner.invoke(
            app, ["train", "--prepared", str(prepared_dir), "--streaming", mode, "--out", str(out), *ARGS]
        )
        assert result.exit_code == 0, result.output
        results[mode] = _summary(result.output)
        assert json.loads((out / "summary.json").read_text())["test_auc"] == results[mode]["test_auc"]
        assert (out / "model.pt").is_file()
    # different row orders, same data and model: both learn, to a similar test AUC
    for s in results.values():
        assert s["test_auc"] > 0.6
        assert s["history"][-1]["train_loss"] < s["history"][0]["train_loss"]
    assert abs(results["on"]["test_auc"] - results["off"]["test_auc"]) < 0.03


def test_streaming_needs_prepared_data() -> None:
    result = runner.invoke(app, ["train", "--dataset", "synthetic", "--streaming", "on", *ARGS])
    assert result.exit_code != 0
    assert "--prepared" in result.output


@pytest.mark.slow  # a 2-process torchrun
def test_torchrun_streaming_run_writes_one_result_from_rank0(prepared_dir: Path, tmp_path: Path) -> None:
    mdctr = shutil.which("mdctr", path=str(Path(sys.executable).parent))
    assert mdctr is not None
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--no-python",
    ]
    proc = subprocess.run(
        [
            *cmd,
            mdctr,
            "train",
            "--prepared",
            str(prepared_dir),
            "--streaming",
            "on",
            "--out",
            str(out),
            *ARGS,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count('"test_auc"') == 1  # only rank 0 prints
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_auc"] > 0.6
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(k.startswith("towers") or "tower" in k for k in state)
