"""mine_domains, train_model, evaluate, register_model and promote_model on tiny synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mdctr.steps.evaluate import ROC_POINTS, WINNER_BUNDLE_DIR, WINNER_ENTRY_FILE
from mdctr.steps.mine_domains import CODES_FILE, MINER_DIR, REPORT_JSON, MineConfig, mine_domains
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE
from mdctr.steps.promote_model import PromoteConfig, promote_model
from mdctr.steps.register_model import RegisterConfig, register_model
from mdctr.steps.train_model import METRICS_FILE, PREDICTIONS_FILE, TrainStepConfig, train_model
from mdctr.tracking.names import KEEP, PROMOTE

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def trained(ws: Any, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    root = tmp_path_factory.mktemp("train")
    out = []
    for seed in SEEDS:
        out.append(
            train_model(
                prepared_dir=ws.prepared.path,
                domains_dir=None,
                bundle_dir=root / f"bundle-{seed}",
                results_dir=root / f"results-{seed}",
                config=TrainStepConfig(
                    model_name="dnn",
                    domain_source="none",
                    seed=seed,
                    epochs=1,
                    train_options='{"batch_size": 512}',
                    tracking_uri=ws.tracking_uri,
                    parent_run_id=ws.fetched.run_id,
                ),
            )
        )
    return out


@pytest.fixture(scope="module")
def evaluated(
    trained: list[Any], ws: Any, tmp_path_factory: pytest.TempPathFactory, evaluate_step: Any
) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    result = evaluate_step(root, trained, ws.tracking_uri, ws.fetched.run_id)
    return result, root


def test_mine_domains_writes_miner_codes_and_report(ws: Any, tmp_path: Path) -> None:
    out = mine_domains(
        prepared_dir=ws.prepared.path,
        out_dir=tmp_path / "domains",
        report_path=tmp_path / "report.md",
        config=MineConfig(miner_options='{"num_codes": 4, "epochs": 1}', seed=0),
    )
    assert (tmp_path / "domains" / MINER_DIR).is_dir()
    codes = np.load(tmp_path / "domains" / CODES_FILE)
    assert {k: len(codes[k]) for k in ("train", "valid", "test")} == ws.prepared.rows
    assert codes["train"].min() >= 0 and codes["train"].max() < 4
    assert 1 <= out.codes_used <= 4
    assert json.loads((tmp_path / "domains" / REPORT_JSON).read_text())["rows"] == ws.prepared.rows["test"]
    assert "agreement.planted.nmi" in out.summary and "perplexity" in out.summary
    assert (tmp_path / "report.md").read_text().strip()


def test_train_fits_the_budget_and_writes_bundle_and_results(trained: list[Any], ws: Any) -> None:
    from mdctr.serving.bundle import Predictor

    t = trained[0]
    summary = json.loads((t.results_dir / METRICS_FILE).read_text())
    assert summary["entry"] == {"model": "dnn", "domain_source": "none", "seed": 0}
    assert set(summary["overall"]) >= {"auc", "logloss", "flops_per_sample", "dense_params", "width"}
    assert len(summary["per_domain"]) == ws.prepared.num_domains
    assert summary["budget"]["budget"] == "model:dnn" and summary["budget"]["budget_rel_error"] < 0.05
    preds = np.load(t.results_dir / PREDICTIONS_FILE)
    assert len(preds["probs"]) == ws.prepared.rows["test"] == len(preds["labels"])
    # the reported AUC is the one of the saved test predictions (not merely a number in [0, 1])
    from sklearn.metrics import roc_auc_score

    assert t.metrics["auc"] == pytest.approx(roc_auc_score(preds["labels"], preds["probs"]), abs=1e-9)
    assert summary["overall"]["auc"] == t.metrics["auc"] and t.flops > 0 and t.run_id
    example = pd.read_parquet(t.results_dir / SERVING_EXAMPLE_FILE)
    probs = Predictor.load(t.bundle_dir).predict(example)
    assert probs.shape == (len(example),) and np.all((probs > 0) & (probs < 1))


def test_train_logs_a_nested_run(trained: list[Any], ws: Any) -> None:
    from mdctr.tracking.setup import client

    run = client(ws.tracking_uri).get_run(trained[1].run_id)
    assert run.data.tags["mlflow.parentRunId"] == ws.fetched.run_id
    assert math.isclose(run.data.metrics["auc"], trained[1].metrics["auc"])
    assert run.data.params["seed"] == "1"


def test_evaluate_builds_leaderboard_report_and_winner(
    evaluated: tuple[Any, Path], trained: list[Any]
) -> None:
    result, root = evaluated
    assert result.winner == "dnn/none" and result.entries == 1 and result.runs == len(SEEDS)
    assert "dnn/none" in (root / "leaderboard.md").read_text()
    page = (root / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "<table" in page
    for name in ("leaderboard.csv", "leaderboard.json", "roc_winner.json", "report.html"):
        assert (root / "tables" / name).is_file(), name
    assert (root / "winner" / WINNER_BUNDLE_DIR / "bundle.json").is_file()
    entry = json.loads((root / "winner" / WINNER_ENTRY_FILE).read_text())
    assert entry["run_id"] == result.winner_run_id and entry["seed"] == result.winner_seed
    # the exported seed is the one with the best validation AUC, not the best test AUC
    best_valid = max(trained, key=lambda t: t.metrics["best_valid_auc"])
    assert result.winner_run_id == best_valid.run_id


def test_roc_is_thinned_and_json_safe(evaluated: tuple[Any, Path]) -> None:
    roc = evaluated[0].roc
    assert 2 <= len(roc.fpr) == len(roc.tpr) == len(roc.thresholds) <= ROC_POINTS
    assert roc.fpr[0] == 0.0 and roc.fpr[-1] == 1.0 and roc.tpr[-1] == 1.0
    assert all(math.isfinite(x) for x in roc.thresholds)
    assert list(roc.fpr) == sorted(roc.fpr)


def test_register_gate_and_promote(evaluated: tuple[Any, Path], ws: Any, tmp_path: Path) -> None:
    from mdctr import tracking
    from mdctr.serving import Predictor
    from mdctr.tracking.setup import client

    _, root = evaluated
    cfg = RegisterConfig(tracking_uri=ws.tracking_uri, parent_run_id=ws.fetched.run_id)
    first = register_model(winner_dir=root / "winner", config=cfg)
    assert first.decision == PROMOTE and first.model_uri == f"models:/{first.name}/{first.version}"
    # registered under the dataset's own model
    dataset = Predictor.load(root / "winner" / "bundle").spec.schema.name
    assert first.name == tracking.registered_model_name(dataset)
    assert tracking.alias_version(ws.tracking_uri, tracking.CHALLENGER, name=first.name) == first.version
    # the parent run stays open for the promote step: only the exit handler closes it
    assert client(ws.tracking_uri).get_run(ws.fetched.run_id).info.status == "RUNNING"
    out = promote_model(
        manifest_path=tmp_path / "isvc.yaml",
        config=PromoteConfig(
            name=first.name, version=first.version, tracking_uri=ws.tracking_uri, namespace="serving"
        ),
    )
    assert tracking.alias_version(ws.tracking_uri, tracking.CHAMPION, name=first.name) == first.version
    assert out.service_name == first.name  # each dataset's champion gets its own InferenceService
    manifest = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert manifest["kind"] == "InferenceService" and manifest["metadata"]["namespace"] == "serving"
    assert manifest["metadata"]["name"] == first.name
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert {"name": "STORAGE_URI", "value": out.storage_uri} in container["env"]
    # the same model again does not beat the champion: the gate keeps it
    second = register_model(winner_dir=root / "winner", config=cfg)
    assert second.decision == KEEP and "does not beat" in second.reason
    assert second.name == first.name
    assert tracking.alias_version(ws.tracking_uri, tracking.CHAMPION, name=first.name) == first.version
    assert tracking.alias_version(ws.tracking_uri, tracking.CHALLENGER, name=first.name) == second.version


def test_a_control_source_bundle_serves_with_the_train_fitted_routing(ws: Any, tmp_path: Path) -> None:
    """A ``binned`` entry's bundle keeps the bins fitted on train, and serving routes raw rows by them."""
    import torch

    from mdctr.data.prepare import read_prepared
    from mdctr.routing import ControlState
    from mdctr.serving.bundle import Predictor

    out = train_model(
        prepared_dir=ws.prepared.path,
        domains_dir=None,
        bundle_dir=tmp_path / "bundle",
        results_dir=tmp_path / "results",
        config=TrainStepConfig(
            model_name="star", domain_source="binned", epochs=1, train_options='{"batch_size": 512}'
        ),
    )
    prepared = read_prepared(ws.prepared.path)
    fitted = ControlState.fit("binned", prepared)
    predictor = Predictor.load(out.bundle_dir)
    assert predictor.control == fitted and predictor.info.domain_source == "binned"
    example = pd.read_parquet(out.results_dir / SERVING_EXAMPLE_FILE)
    encoded = predictor.encode(example)
    schema = prepared.spec.schema
    raw = torch.tensor(example[fitted.column].to_numpy(), dtype=torch.float64)
    mean, std = prepared.spec.mean[fitted.column], prepared.spec.std[fitted.column]
    scaled = ((raw - mean) / std).float().double()  # the encoder stores float32
    expected = torch.bucketize(scaled, torch.tensor(fitted.edges, dtype=torch.float64), right=True)
    assert torch.equal(encoded.domain, expected)
    assert fitted.column in schema.dense and fitted.num_domains > 1
    assert np.all((predictor.predict(example) > 0) & (predictor.predict(example) < 1))
