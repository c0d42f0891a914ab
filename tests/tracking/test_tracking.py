"""Runs, registration, the promotion gate and aliases — on embedded SQLite and on mlflow server with
PostgreSQL + S3 (``backend`` is parametrised over both)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from mdctr import tracking
from mdctr.serving import Predictor
from mdctr.serving.bundle import METRICS_FILE
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.tracking.names import CHALLENGER, CHAMPION, registered_model_name

pytestmark = pytest.mark.integration
#: the demo bundle's dataset registers under its own model
NAME = registered_model_name(DEMO_SCHEMA.name)


def _training_run(uri: str, demo: DemoBundle) -> tuple[str, str]:
    parent = tracking.start_parent_run(
        uri,
        run_name="pipeline",
        params={"dataset": "demo", "budget": {"flops": 1000}},
        data_rev="v1",
        data_md5="abc123",
        git_sha="deadbeef",
        kfp_run_id="kfp-1",
    )
    run = tracking.log_training_run(
        uri,
        parent,
        run_name="dnn-none",
        params={"model": "dnn", "config": {"hidden": [16]}, "width": 1.0},
        history=[
            {"epoch": 0, "train_loss": 0.69, "valid_auc": 0.6},
            {"epoch": 1, "train_loss": 0.6, "valid_auc": 0.65},
        ],
        metrics={"auc": 0.7, "logloss": 0.6, "flops_per_sample": 1234.0, "dense_params": 321},
        per_domain=[
            {"domain": d, "name": n, "auc": 0.7, "rows": 10} for d, n in enumerate(DEMO_SCHEMA.domain_names)
        ],
        tags={"mdctr.domain_source": "none"},
        artifacts=[demo.path / METRICS_FILE],
    )
    return parent, run


def test_runs_params_metrics_tables_and_artifacts(
    backend: Any, demo_bundle: DemoBundle, tmp_path: Path
) -> None:
    uri = tracking.configure(backend.uri)
    parent, run_id = _training_run(uri, demo_bundle)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "leaderboard.md").write_text("| model | auc |\n|---|---|\n| dnn | 0.7 |\n")
    tracking.log_evaluation(uri, parent, metrics={"best_auc": 0.7}, artifact_dir=tmp_path / "eval")
    tracking.end_parent_run(uri, parent)

    c = MlflowClient(uri)
    p, r = c.get_run(parent), c.get_run(run_id)
    assert p.info.status == "FINISHED" and p.info.run_name == "pipeline"
    assert {
        k: p.data.tags[k] for k in ("mdctr.data_rev", "mdctr.data_md5", "mdctr.git_sha", "mdctr.kfp_run_id")
    } == {
        "mdctr.data_rev": "v1",
        "mdctr.data_md5": "abc123",
        "mdctr.git_sha": "deadbeef",
        "mdctr.kfp_run_id": "kfp-1",
    }
    assert p.data.params == {"dataset": "demo", "budget.flops": "1000"}
    assert p.data.metrics["best_auc"] == pytest.approx(0.7)
    assert r.data.tags["mlflow.parentRunId"] == parent
    assert r.data.params["config.hidden"] == "[16]"
    assert r.data.metrics["flops_per_sample"] == 1234.0 and r.data.metrics["dense_params"] == 321
    assert r.data.metrics["domain.old.auc"] == pytest.approx(0.7)  # named, not numbered
    curve = c.get_metric_history(run_id, "valid_auc")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [(0, 0.6), (1, 0.65)]
    arts = {a.path for a in c.list_artifacts(run_id)}
    assert {"per_domain.json", "metrics.json"} <= arts
    table = json.loads(Path(c.download_artifacts(run_id, "per_domain.json", str(tmp_path))).read_text())
    assert table["columns"][:3] == ["domain", "name", "auc"] and len(table["data"]) == 3
    assert [a.path for a in c.list_artifacts(parent, "evaluation")] == ["evaluation/leaderboard.md"]


def test_register_gate_and_aliases(
    backend: Any, demo_bundle: DemoBundle, tmp_path: Path, with_metrics: Any
) -> None:
    uri = tracking.configure(backend.uri)
    _, run_id = _training_run(uri, demo_bundle)
    c = MlflowClient(uri)

    def register(name: str, auc: float, domains: tuple[float, float, float]) -> str:
        bundle = with_metrics(demo_bundle, tmp_path / name, auc, domains)
        rv = tracking.register_bundle(uri, bundle, run_id=run_id, input_example=demo_bundle.table)
        assert rv.model_uri == f"models:/{NAME}/{rv.version}"
        assert tracking.alias_version(uri, CHALLENGER, name=NAME) == rv.version
        return rv.version

    first = register("first", 0.70, (0.70, 0.70, 0.70))
    tags = c.get_model_version(NAME, first).tags
    assert tags["metric.auc"] == "0.7" and tags["domain.1.auc"] == "0.7" and tags["mdctr.model"] == "dnn"
    gate = tracking.decide_promotion(uri, first, name=NAME)
    assert gate.promote and gate.champion_version is None and "no champion" in gate.reason
    assert tracking.promote(uri, first, name=NAME) == f"models:/{NAME}/{first}"
    assert tracking.alias_version(uri, CHAMPION, name=NAME) == first

    better = register("better", 0.72, (0.71, 0.72, 0.70))
    gate = tracking.decide_promotion(uri, better, name=NAME)
    assert gate.promote and gate.champion_version == first
    assert gate.domain_deltas == pytest.approx({0: 0.01, 1: 0.02, 2: 0.0})
    tracking.promote(uri, better, name=NAME)
    assert tracking.alias_version(uri, CHAMPION, name=NAME) == better

    worse = register("worse", 0.715, (0.72, 0.72, 0.72))
    gate = tracking.decide_promotion(uri, worse, name=NAME)
    assert not gate.promote and "does not beat" in gate.reason
    assert gate.challenger["auc"] == 0.715 and gate.champion["auc"] == 0.72

    # better overall, but domain 2 loses 0.005 > tolerance 0.002
    regressing = register("regressing", 0.73, (0.75, 0.75, 0.695))
    gate = tracking.decide_promotion(uri, regressing, name=NAME, tolerance=0.002)
    assert not gate.promote and "domain(s) [2]" in gate.reason
    assert gate.domain_deltas[2] == pytest.approx(-0.005)
    # ... which a looser tolerance accepts
    assert tracking.decide_promotion(uri, regressing, name=NAME, tolerance=0.01).promote

    assert tracking.alias_version(uri, CHAMPION, name=NAME) == better  # a refusal never moves the champion
    assert tracking.alias_version(uri, CHALLENGER, name=NAME) == regressing
    gate_tags = c.get_model_version(NAME, worse).tags
    assert gate_tags["gate.decision"] == "keep" and gate_tags["gate.champion_version"] == better
    assert float(gate_tags["gate.challenger_auc"]) == 0.715 and "does not beat" in gate_tags["gate.reason"]

    # the registered pyfunc predicts exactly what the bundle predicts offline
    rows = demo_bundle.table[list(DEMO_SCHEMA.serving_columns)].head(50)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}").predict(rows)
    np.testing.assert_allclose(
        np.asarray(served), Predictor.load(demo_bundle.path).predict(rows), rtol=0, atol=1e-12
    )


def test_server_keeps_runs_in_postgres_and_artifacts_in_s3(
    postgres_s3_server: Any, demo_bundle: DemoBundle
) -> None:
    srv = postgres_s3_server
    uri = tracking.configure(srv.uri)
    _, run_id = _training_run(uri, demo_bundle)
    rv = tracking.register_bundle(uri, demo_bundle.path, run_id=run_id, input_example=demo_bundle.table)

    conn = srv.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM runs WHERE run_uuid = %s", (run_id,))
            assert cur.fetchone() == ("dnn-none",)
            cur.execute("SELECT count(*) FROM model_versions WHERE name = %s", (NAME,))
            assert cur.fetchone()[0] >= 1
    finally:
        conn.close()

    prefix = srv.server.artifacts_destination.removeprefix(f"s3://{srv.s3.bucket}/")
    keys = [
        o["Key"] for o in srv.s3.client().list_objects_v2(Bucket=srv.s3.bucket, Prefix=prefix)["Contents"]
    ]
    assert any(k.endswith(f"{run_id}/artifacts/per_domain.json") for k in keys)
    assert any(k.endswith("/artifacts/data/bundle/model.pt") for k in keys)  # the pyfunc's copy of the bundle
    assert any(k.endswith("/MLmodel") for k in keys)

    storage = tracking.model_storage_uri(
        uri, rv.version, name=NAME, artifacts_destination=srv.server.artifacts_destination
    )
    assert storage.startswith(srv.server.artifacts_destination + "/")
    mlmodel_key = storage.removeprefix(f"s3://{srv.s3.bucket}/") + "/MLmodel"
    assert mlmodel_key in keys
    with pytest.raises(ValueError, match="artifacts_destination"):
        tracking.model_storage_uri(uri, rv.version, name=NAME)


def test_gate_rescores_on_validation_and_refuses_other_datasets(tmp_path: Path, with_metrics: Any) -> None:
    """Stored tags can lie (stale, or another split): with the current validation rows the gate scores both
    versions itself; and a version of another dataset/feature schema is never compared with the champion."""
    import dataclasses

    from mdctr.serving.demo import demo_table, make_demo_bundle

    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    trained = make_demo_bundle(tmp_path / "trained", epochs=3)
    # random weights (seeded): AUC 0.39 on the validation rows below, against 0.60 for the trained bundle
    untrained = make_demo_bundle(tmp_path / "untrained", epochs=0, rows=6000)
    _, run_id = _training_run(uri, trained)

    def register(name: str, demo: DemoBundle, claimed_auc: float, schema: Any = DEMO_SCHEMA) -> str:
        bundle = with_metrics(demo, tmp_path / name, claimed_auc, (claimed_auc,) * 3)
        version = tracking.register_bundle(uri, bundle, run_id=run_id, input_example=demo.table).version
        tracking.tag_schema(uri, version, schema, name=NAME)
        return version

    table = demo_table(1500, seed=7)  # rows neither bundle trained on
    validation = tracking.ValidationSet(
        frame=table[list(DEMO_SCHEMA.serving_columns)],
        labels=table[DEMO_SCHEMA.label].to_numpy(np.float64),
        domains=table[DEMO_SCHEMA.domain].to_numpy(),
        schema=DEMO_SCHEMA,
    )
    champion = register("champion", trained, claimed_auc=0.55)
    assert tracking.decide_promotion(uri, champion, name=NAME, validation=validation).promote
    tracking.promote(uri, champion, name=NAME)

    liar = register("liar", untrained, claimed_auc=0.99)
    assert tracking.decide_promotion(uri, liar, name=NAME).promote  # the stale tags alone would promote it
    gate = tracking.decide_promotion(uri, liar, name=NAME, validation=validation)
    assert not gate.promote and "does not beat" in gate.reason
    assert gate.challenger["auc"] < gate.champion["auc"]  # measured, not the claimed 0.99 vs 0.55
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/{champion}").predict(validation.frame)
    from sklearn.metrics import roc_auc_score

    assert gate.champion["auc"] == pytest.approx(roc_auc_score(validation.labels, served))
    tags = MlflowClient(uri).get_model_version(NAME, liar).tags
    assert tags["gate.scored_on"] == "validation (1500 rows)"

    other = dataclasses.replace(DEMO_SCHEMA, name="other-dataset")
    foreign = register("foreign", trained, claimed_auc=0.99, schema=other)
    gate = tracking.decide_promotion(uri, foreign, name=NAME)
    assert not gate.promote and "different datasets" in gate.reason and "other-dataset" in gate.reason
    reshaped = dataclasses.replace(DEMO_SCHEMA, dense=())
    assert tracking.schema_fingerprint(reshaped) != tracking.schema_fingerprint(DEMO_SCHEMA)
    changed = register("changed", trained, claimed_auc=0.99, schema=reshaped)
    gate = tracking.decide_promotion(uri, changed, name=NAME)
    assert not gate.promote and "different feature schemas" in gate.reason
    assert tracking.alias_version(uri, CHAMPION, name=NAME) == champion


def _as_dataset(demo: DemoBundle, dest: Path, dataset: str, auc: float, with_metrics: Any) -> Path:
    """A copy of the demo bundle whose feature spec says it was trained on ``dataset`` (same columns);
    ``with_metrics``: the fixture of tests/tracking/conftest.py."""
    import dataclasses

    from mdctr.data.encode import FeatureSpec
    from mdctr.serving.bundle import SPEC_FILE

    bundle = with_metrics(demo, dest, auc, (auc,) * 3)
    spec = FeatureSpec.load(bundle / SPEC_FILE)
    dataclasses.replace(spec, schema=dataclasses.replace(spec.schema, name=dataset)).save(bundle / SPEC_FILE)
    return bundle


def test_each_dataset_registers_its_own_model_and_is_gated_only_against_it(
    demo_bundle: DemoBundle, tmp_path: Path, with_metrics: Any
) -> None:
    """Two datasets through registration give two registered models; a version of one is gated against its
    own dataset's champion only, never against (or replacing) the other's."""
    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    _, run_id = _training_run(uri, demo_bundle)

    def register(bundle: Path) -> tracking.RegisteredVersion:
        # one load of the bundle, by the caller; registration tags its dataset and feature schema itself
        predictor = Predictor.load(bundle)
        schema = predictor.spec.schema
        rv = tracking.register_bundle(
            uri, bundle, run_id=run_id, input_example=demo_bundle.table, predictor=predictor
        )
        tags = MlflowClient(uri).get_model_version(rv.name, rv.version).tags
        assert tags["mdctr.schema"] == schema.name
        assert tags["mdctr.schema_hash"] == tracking.schema_fingerprint(schema)
        return rv

    shop = register(_as_dataset(demo_bundle, tmp_path / "shop", "shop", auc=0.80, with_metrics=with_metrics))
    assert (shop.name, shop.version) == ("mdctr-shop", "1")
    assert tracking.decide_promotion(uri, shop.version, name=shop.name).promote
    tracking.promote(uri, shop.version, name=shop.name)

    # a much weaker model of another dataset: with one shared model the gate would have compared it with the
    # shop champion (and refused it, or, with looser checks, let one dataset's model replace the other's)
    movies = register(
        _as_dataset(demo_bundle, tmp_path / "movies", "Movies_1M", auc=0.55, with_metrics=with_metrics)
    )
    assert (movies.name, movies.version) == ("mdctr-movies-1m", "1")
    assert movies.model_uri == "models:/mdctr-movies-1m/1"
    gate = tracking.decide_promotion(uri, movies.version, name=movies.name)
    assert gate.promote and gate.champion_version is None and gate.champion == {}
    tracking.promote(uri, movies.version, name=movies.name)

    assert tracking.registered_models(uri) == ["mdctr-movies-1m", "mdctr-shop"]
    assert tracking.alias_version(uri, CHAMPION, name="mdctr-shop") == shop.version  # untouched
    assert tracking.alias_version(uri, CHAMPION, name="mdctr-movies-1m") == movies.version

    # the next shop version is compared with the shop champion (0.80), not the movies one (0.55)
    shop2 = register(
        _as_dataset(demo_bundle, tmp_path / "shop2", "shop", auc=0.70, with_metrics=with_metrics)
    )
    assert (shop2.name, shop2.version) == ("mdctr-shop", "2")
    gate = tracking.decide_promotion(uri, shop2.version, name=shop2.name)
    assert not gate.promote and gate.champion_version == shop.version and gate.champion["auc"] == 0.80
    assert "does not beat" in gate.reason


def test_an_explicit_name_overrides_the_dataset_model(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    _, run_id = _training_run(uri, demo_bundle)
    rv = tracking.register_bundle(
        uri, demo_bundle.path, run_id=run_id, input_example=demo_bundle.table, name="ctr-canary"
    )
    assert rv.model_uri == "models:/ctr-canary/1" and tracking.alias_version(
        uri, CHALLENGER, name="ctr-canary"
    )
    assert MlflowClient(uri).search_model_versions(f"name='{NAME}'") == []


def test_dataset_inputs_logged_again_when_another_run_inserted_them_first(tmp_path, monkeypatch) -> None:
    """Two training tasks logging the same splits at once: the slower insert fails on the store's unique key
    (SQLite "UNIQUE constraint failed"), and logging again links the dataset the other task inserted."""
    import sqlite3

    import mlflow
    from mlflow.exceptions import MlflowException

    from mdctr.tracking.runs import DatasetRef, log_datasets

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("race"))
    ref = DatasetRef("train", "synthetic", 10, {"dataset": "synthetic"}, "abc")
    calls = []
    real = client.log_inputs

    def racing(run_id, datasets=None):
        calls.append(run_id)
        if len(calls) == 1:  # the other task's insert won: what the store raised in a real pipeline run
            cause = sqlite3.IntegrityError("UNIQUE constraint failed: datasets.experiment_id, datasets.name")
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed") from cause
        return real(run_id, datasets=datasets)

    monkeypatch.setattr(client, "log_inputs", racing)
    log_datasets(client, run.info.run_id, [ref])
    assert len(calls) == 2
    logged = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert [d.dataset.digest for d in logged] == ["abc"]

    def broken(run_id, datasets=None):  # any other store error is not retried
        calls.append(run_id)
        raise MlflowException("the store is read-only")

    calls.clear()
    monkeypatch.setattr(client, "log_inputs", broken)
    with pytest.raises(MlflowException, match="read-only"):
        log_datasets(client, run.info.run_id, [ref])
    assert len(calls) == 1
