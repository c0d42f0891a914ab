"""Where tracking goes: the embedded default (SQLite + local artifacts) or a given tracking server/URI."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mdctr.tracking.names import EXPERIMENT, EXPERIMENT_KIND, TAG_EXPERIMENT_KIND

log = logging.getLogger(__name__)

DEFAULT_DIR = "mlruns"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


def default_tracking_uri(root: Path | str | None = None) -> str:
    """Embedded store: ``sqlite:///<abs root>/mlflow.db`` with ``root`` defaulting to ``<cwd>/mlruns``."""
    root = Path(root or Path.cwd() / DEFAULT_DIR).resolve()
    return f"sqlite:///{root / DB_FILE}"


def _normalise(uri: str) -> str:
    """A bare directory path means an embedded store in that directory."""
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        return default_tracking_uri(uri)
    return uri


def _local_artifact_root(uri: str) -> str | None:
    """Absolute artifact location beside an SQLite database; None for servers (they own artifact storage)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / ARTIFACTS_DIR).resolve().as_uri()
    return None


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (else ``$MLFLOW_TRACKING_URI``, else the embedded default), make sure
    the ``mdctr`` experiment exists and is tagged as model training (``mlflow.experimentKind`` =
    ``custom_model_development``), make it the active experiment, and return the URI in use.

    With an SQLite store the experiment's artifact location is an absolute ``file://`` path next to the database,
    so artifacts do not depend on the working directory of whoever logs next.
    """
    uri = _normalise(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        try:
            client.create_experiment(EXPERIMENT, artifact_location=_local_artifact_root(uri))
            log.info("created MLflow experiment %r at %s", EXPERIMENT, uri)
        except mlflow.exceptions.MlflowException:
            # another pipeline task created it between our lookup and create
            if client.get_experiment_by_name(EXPERIMENT) is None:
                raise
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:
        # without it MLflow 3's UI opens the experiment on its GenAI overview instead of the training runs
        client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def client(tracking_uri: str | None = None) -> MlflowClient:
    """A client for the configured store (calls :func:`configure`)."""
    uri = configure(tracking_uri)
    return MlflowClient(uri, registry_uri=uri)
