"""Tracking backends for the tests: embedded SQLite, and ``mlflow server`` on PostgreSQL + S3 (s3rver)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from mdctr import tracking
from mdctr.devservices import start_s3
from mdctr.devservices.mlflow_server import MlflowServer, start_mlflow_server
from mdctr.serving.bundle import METRICS_FILE
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle, make_demo_bundle
from mdctr.tracking.names import registered_model_name

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
S3_PREFIX = "mlflow-test"


@dataclass(frozen=True)
class Backend:
    """Where a test logs: ``uri`` for mdctr.tracking; the server details when it is the production setup."""

    kind: str
    uri: str
    database: str | None = None
    server: MlflowServer | None = None
    s3: Any = None

    def connect(self) -> Any:
        """A psycopg2 connection to this backend's PostgreSQL database (server backend only)."""
        return psycopg2.connect(dbname=self.database, **PG)


def _admin(sql: str) -> None:
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def bundle_with_metrics(
    demo: DemoBundle, dest: Path, auc: float, domain_auc: tuple[float, float, float]
) -> Path:
    """A copy of the demo bundle at ``dest`` whose stored test metrics are the given ones (overall AUC and the
    three domains' AUCs; logloss 0.6): the gate reads only those."""
    shutil.copytree(demo.path, dest)
    metrics = {
        "overall": {"auc": auc, "logloss": 0.6},
        "per_domain": [{"domain": d, "auc": a, "logloss": 0.6} for d, a in enumerate(domain_auc)],
    }
    (dest / METRICS_FILE).write_text(json.dumps(metrics))
    return dest


@pytest.fixture(scope="session")
def with_metrics() -> Callable[..., Path]:
    """:func:`bundle_with_metrics`: ``with_metrics(demo, dest, auc, (auc0, auc1, auc2))``."""
    return bundle_with_metrics


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    return make_demo_bundle(Path(tmp_path_factory.mktemp("bundle")) / "bundle")


@pytest.fixture(scope="module")
def postgres_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A fresh PostgreSQL database and an ``mlflow server`` over it with artifacts in a local S3 bucket.

    The S3 server is moto, not the session's s3rver: s3rver (0.x) omits ``CommonPrefixes`` for directories
    more than one level deep, so MLflow downloads a model without its ``artifacts/`` and ``code/`` folders.
    """
    db = f"mdctr_test_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{db}"')
    s3_server = start_s3(tmp_path_factory.mktemp("s3"), backend="moto")
    server = None
    try:
        server = start_mlflow_server(
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
            f"s3://{s3_server.bucket}/{S3_PREFIX}/{db}",
            env=s3_server.env(),
            log_dir=tmp_path_factory.mktemp("mlflow-server"),
        )
        yield Backend("server", server.url, database=db, server=server, s3=s3_server)
    finally:
        if server is not None:
            server.stop()
        s3_server.stop()
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    return request.getfixturevalue("postgres_s3_server")


#: the demo bundle's dataset registers under its own model
DEMO_NAME = registered_model_name(DEMO_SCHEMA.name)


@pytest.fixture
def store(tmp_path: Path, demo_bundle: DemoBundle, with_metrics: Any) -> str:
    """An SQLite store holding versions 1 (auc 0.70, champion via the gate) and 2 (auc 0.72, challenger)."""
    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = tracking.start_parent_run(
        uri,
        run_name="pipeline",
        params={"dataset": "demo"},
        data_rev="v7",
        data_md5="0123abcd",
        git_sha="c0ffee",
    )
    run = tracking.log_training_run(
        uri,
        parent,
        run_name="dnn-none",
        params={"model": "dnn"},
        history=[],
        metrics={"auc": 0.7, "flops_per_sample": 52_224.0, "dense_params": 25_921},
        per_domain=[{"domain": d, "name": n, "auc": 0.7} for d, n in enumerate(("young", "middle", "old"))],
    )
    for name, auc, domains in (("v1", 0.70, (0.70, 0.70, 0.70)), ("v2", 0.72, (0.71, 0.72, 0.70))):
        bundle = with_metrics(demo_bundle, tmp_path / name, auc, domains)
        tracking.register_bundle(uri, bundle, run_id=run, input_example=demo_bundle.table)
    # version 1 became champion the way the pipeline does it: gate, then promote (which writes the history)
    gate = tracking.decide_promotion(uri, "1", name=DEMO_NAME)
    assert gate.promote
    tracking.promote(uri, "1", name=DEMO_NAME, reason=gate.reason)
    return uri
