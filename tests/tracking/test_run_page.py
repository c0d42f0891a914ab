"""What a user sees in MLflow after a tiny run of the real steps (issue 17): the MLflow store is opened
afterwards and read as the UI would read it — run durations, system metrics, live epoch curves, params,
dataset inputs, the parent's winner/version/gate decision and the version's description."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from mlflow import MlflowClient

from mdctr import tracking
from mdctr.steps.fetch_data import FetchConfig, fetch_data
from mdctr.steps.mine_domains import MineConfig, mine_domains
from mdctr.steps.prepare_data import PrepareConfig, prepare_data
from mdctr.steps.register_model import RegisterConfig, register_model
from mdctr.steps.train_model import TrainStepConfig, train_model
from mdctr.tracking import names
from mdctr.tracking.names import KEEP, PROMOTE

# the module fixture runs fetch → prepare → mine → train ×2 → evaluate → register (~20 s on 2 shared cores)
pytestmark = pytest.mark.slow
OPTIONS = json.dumps({"rows": 3000, "seed": 5})
EPOCHS = 3
#: (model, domain source): a single-domain baseline and an entry routed by the pre-trained miner
ENTRIES = (("dnn", "none"), ("mlora", "mined"))


@dataclass(frozen=True)
class Done:
    uri: str
    parent: str
    fetched: Any
    trained: list[Any]
    registered: Any
    winner: str


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, evaluate_step: Any) -> Done:
    root = tmp_path_factory.mktemp("run-page")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    fetched = fetch_data(
        out_dir=root / "raw",
        config=FetchConfig(dataset="synthetic", dataset_options=OPTIONS, tracking_uri=uri),
    )
    prepared = prepare_data(
        source=root / "raw",
        out_dir=root / "prepared",
        config=PrepareConfig(dataset="synthetic", dataset_options=OPTIONS),
    )
    mine_domains(
        prepared_dir=prepared.path,
        out_dir=root / "domains",
        report_path=root / "domains.md",
        config=MineConfig(miner_options='{"num_codes": 4, "epochs": 1}', seed=0),
    )
    trained = [
        train_model(
            prepared_dir=prepared.path,
            domains_dir=root / "domains",
            bundle_dir=root / f"bundle-{model}",
            results_dir=root / f"results-{model}",
            config=TrainStepConfig(
                model_name=model,
                domain_source=source,
                epochs=EPOCHS,
                # patience above the epochs: early stopping must not cut the curve this test reads
                train_options=json.dumps({"batch_size": 256, "lr": 0.003, "patience": EPOCHS + 1}),
                tracking_uri=uri,
                parent_run_id=fetched.run_id,
            ),
        )
        for model, source in ENTRIES
    ]
    evaluated = evaluate_step(root, trained, uri, fetched.run_id)
    registered = register_model(
        winner_dir=root / "winner",
        prepared_dir=prepared.path,
        config=RegisterConfig(tracking_uri=uri, parent_run_id=fetched.run_id),
    )
    return Done(uri, fetched.run_id, fetched, trained, registered, evaluated.winner)


def test_experiment_opens_on_training_runs(done: Done, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = MlflowClient(done.uri).get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # MLflow 3.17's UI ignores that tag and opens in its GenAI layout unless the link asks for the
    # model-training one: every UI link we print does
    from mdctr.tracking import reports

    assert reports.ui_url("http://mlflow:5000/", "7", "/runs/abc") == (
        "http://mlflow:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    )
    served = MlflowClient(done.uri)
    monkeypatch.setattr(reports, "get_client", lambda uri: served)
    link = reports.artifact_location("http://mlflow:5000", done.parent, "evaluation/report.html")
    assert link == (
        f"http://mlflow:5000/#/experiments/{exp.experiment_id}/runs/{done.parent}/artifacts/"
        "evaluation/report.html?workflowType=machine_learning"
    )


def test_training_runs_cover_training_with_live_curves_and_system_metrics(done: Done) -> None:
    c = MlflowClient(done.uri)
    for t in done.trained:
        run = c.get_run(t.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == done.parent
        # the run was open while training ran: its duration is at least the trainer's own wall time
        duration_s = (run.info.end_time - run.info.start_time) / 1000
        assert duration_s >= t.metrics["train_wall_s"] > 0
        system = [k for k in run.data.metrics if k.startswith("system/")]
        assert "system/cpu_utilization_percentage" in system
        assert len(c.get_metric_history(t.run_id, "system/cpu_utilization_percentage")) >= 1
        # one point per epoch, logged as each epoch ended: steps 1..EPOCHS with distinct timestamps
        curve = sorted(c.get_metric_history(t.run_id, "valid_auc"), key=lambda m: m.step)
        assert [m.step for m in curve] == list(range(1, EPOCHS + 1))
        stamps = [m.timestamp for m in curve]
        assert len(set(stamps)) == EPOCHS and stamps == sorted(stamps)
        assert run.info.start_time <= stamps[0] and stamps[-1] <= run.info.end_time


def test_training_runs_carry_every_effective_setting(done: Done) -> None:
    c = MlflowClient(done.uri)
    by_model = {
        c.get_run(t.run_id).data.tags[names.TAG_BUNDLE_MODEL]: c.get_run(t.run_id) for t in done.trained
    }
    for model, run in by_model.items():
        p = run.data.params
        # the trainer's config after defaults: given values and defaults alike
        assert (p["train.lr"], p["train.batch_size"], p["train.epochs"]) == ("0.003", "256", str(EPOCHS))
        assert p["train.weight_decay"] == "1e-05" and p["train.patience"] == str(EPOCHS + 1)
        assert p["train.seed"] == "0" and p["model"] == model and p["flop_budget"] == "model:dnn"
        assert any(k.startswith("model_config.") for k in p), p
        assert run.data.tags[names.TAG_GIT_SHA]
        # per-domain metrics named by the domain, not its id
        domain_keys = [k for k in run.data.metrics if k.startswith("domain.")]
        assert domain_keys and not any(k.split(".")[1].isdigit() for k in domain_keys), domain_keys
    assert by_model["mlora"].data.params["miner.num_codes"] == "4"
    assert not any(k.startswith("miner.") for k in by_model["dnn"].data.params)


def test_training_runs_have_dataset_inputs_with_the_data_version(done: Done) -> None:
    c = MlflowClient(done.uri)
    md5 = c.get_run(done.parent).data.tags[names.TAG_DATA_MD5]
    assert md5 == done.fetched.md5
    for t in done.trained:
        inputs = c.get_run(t.run_id).inputs.dataset_inputs
        contexts = {
            next(tag.value for tag in i.tags if tag.key == "mlflow.data.context"): i.dataset for i in inputs
        }
        assert set(contexts) == {"train", "validation", "test"}
        assert contexts["validation"].name == "synthetic.valid"
        for ds in contexts.values():
            assert ds.digest == md5 and ds.source_type == "dvc"
            source = json.loads(ds.source)
            assert source["md5"] == md5 and source["rev"] == done.fetched.rev
            assert json.loads(ds.profile)["num_rows"] > 0


def test_parent_run_says_what_was_decided(done: Done) -> None:
    c = MlflowClient(done.uri)
    parent = c.get_run(done.parent)
    tags, params = parent.data.tags, parent.data.params
    # still open after register-model: only the pipeline's exit handler closes it (FAILED if promote fails)
    assert parent.info.status == "RUNNING"
    assert tags[names.TAG_WINNER] == done.winner
    assert tags[names.TAG_REGISTERED_VERSION] == done.registered.version
    assert tags[names.TAG_GATE_DECISION] == done.registered.decision
    assert tags[names.TAG_GATE_REASON] == done.registered.reason
    assert params["models"] == str(sorted(m for m, _ in ENTRIES)) and params["epochs"] == str(EPOCHS)
    assert params["dataset"] == "synthetic" and params["gate.tolerance"] == "0.002"
    assert (params["split"], params["split_seed"]) == ("random", "0")  # how the data was split


def test_gate_decision_and_version_description(done: Done) -> None:
    c = MlflowClient(done.uri)
    mv = c.get_model_version(done.registered.name, done.registered.version)
    assert done.registered.name == tracking.registered_model_name("synthetic")  # the dataset's own model
    # one vocabulary for the gate's decision: the version tag says what KFP's output says
    assert done.registered.decision in (PROMOTE, KEEP)
    assert mv.tags["gate.decision"] == done.registered.decision
    assert done.winner in mv.description and done.registered.reason in mv.description
