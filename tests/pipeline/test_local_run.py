"""Integration: the whole DAG on the KFP local runner (subprocesses, this interpreter) on tiny synthetic data,
MLflow on SQLite in a temporary directory; run twice so the gate promotes once and then refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mdctr import tracking
from mdctr.pipeline import PipelineArguments, run_local

pytestmark = pytest.mark.integration

#: one single-domain baseline and one entry routed by mined domains (adaptive2 accepts only "mined")
MODELS = ["dnn", "adaptive2"]
#: the synthetic dataset registers under its own model
NAME = tracking.registered_model_name("synthetic")


def _run(root: Path, uri: str) -> object:
    args = PipelineArguments.local(
        dataset="synthetic",
        dataset_options={"rows": 3000, "seed": 3},
        models=MODELS,
        domain_sources=["none", "mined"],
        seeds=[0],
        epochs=1,
        train_options={"batch_size": 512},
        miner_options={"epochs": 1},
        tracking_uri=uri,
    )
    return run_local(args, runs_dir=root / "runs")


@pytest.mark.timeout(900)
def test_full_dag_runs_locally_and_gates_promotion(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    first = _run(tmp_path, uri)

    # leaderboard: both entries, FLOP-matched, the winner named
    assert "dnn/none" in first.leaderboard and "adaptive2/mined" in first.leaderboard
    # the winner is the entry ranked first, and the ranking is by mean validation AUC (never test)
    assert first.leaderboard_table == next((first.run_dir / "evaluate").rglob("leaderboard.json"))
    board = json.loads(first.leaderboard_table.read_text())["entries"]
    assert [e["entry"] for e in board] == sorted(
        (e["entry"] for e in board),
        key=lambda n: -next(e["valid_auc_mean"] for e in board if e["entry"] == n),
    )
    assert first.winner == board[0]["entry"]
    for task in ("fetch-data", "validate-data", "prepare-data", "mine-domains", "evaluate", "register-model"):
        assert (first.run_dir / task).is_dir(), task
    # first registration, under the dataset's own model: challenger, promoted to champion (no champion
    # existed), KServe manifest written for an InferenceService of that name
    assert first.promoted and first.model_uri == f"models:/{NAME}/1"
    assert tracking.alias_version(uri, tracking.CHALLENGER, name=NAME) == "1"
    assert tracking.alias_version(uri, tracking.CHAMPION, name=NAME) == "1"
    manifest = yaml.safe_load((first.run_dir / "promote-model" / "manifest").read_text())
    assert manifest["kind"] == "InferenceService" and manifest["metadata"]["name"] == NAME

    # second run, same data and seeds: training is deterministic on CPU, so the new challenger is the same
    # model; the gate re-scores both on this run's validation split, finds no strict improvement and refuses
    second = _run(tmp_path, uri)
    assert second.model_uri == f"models:/{NAME}/2"
    assert tracking.alias_version(uri, tracking.CHALLENGER, name=NAME) == "2"
    assert not second.promoted and tracking.alias_version(uri, tracking.CHAMPION, name=NAME) == "1"
    from mlflow import MlflowClient

    tags = MlflowClient(uri).get_model_version(NAME, "2").tags
    assert tags["gate.scored_on"].startswith("validation (") and "does not beat" in tags["gate.reason"]
    assert float(tags["gate.challenger_auc"]) == float(tags["gate.champion_auc"])
