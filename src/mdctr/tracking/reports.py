"""Reports on the parent run: a folder of files (GX Data Docs, the domain report) with its headline metrics and
tags, and where a user finds it afterwards."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mdctr.tracking.runs import _metrics, _tags, flatten
from mdctr.tracking.setup import client as get_client

log = logging.getLogger(__name__)

#: query of every MLflow UI link we print. MLflow 3.17's UI picks an experiment's layout from a per-browser
#: "workflow type" (default GenAI, kept in local storage) and ignores the ``mlflow.experimentKind`` tag; this
#: parameter opens the page in the model-training layout (runs, metrics, artifacts) and remembers the choice.
UI_WORKFLOW = "workflowType=machine_learning"

#: folder of the evaluation's files on the parent run (the default of :func:`mdctr.tracking.log_evaluation`)
EVALUATION_ARTIFACTS = "evaluation"


def ui_url(tracking_uri: str, experiment_id: str, page: str = "") -> str:
    """The MLflow UI page ``page`` (``/runs/<id>``, …) of experiment ``experiment_id`` on the server at
    ``tracking_uri``, opened in the model-training layout (:data:`UI_WORKFLOW`)."""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}{page}?{UI_WORKFLOW}"


def artifact_location(tracking_uri: str | None, run_id: str, path: str) -> str:
    """Where ``path`` (relative to the run's artifact root) can be opened: the MLflow UI page for an http(s)
    tracking server (in the model-training layout, :data:`UI_WORKFLOW`), else the artifact store location (a
    local path for a file store)."""
    c = get_client(tracking_uri)
    run = c.get_run(run_id)
    uri = (tracking_uri or c.tracking_uri or "").rstrip("/")
    if uri.startswith(("http://", "https://")):
        return ui_url(uri, run.info.experiment_id, f"/runs/{run_id}/artifacts/{path}")
    root = run.info.artifact_uri.rstrip("/")
    if root.startswith("file://"):
        from urllib.parse import unquote, urlparse

        root = unquote(urlparse(root).path)
    return f"{root}/{path}"


def log_report(
    tracking_uri: str | None,
    run_id: str,
    *,
    files: Path | str,
    artifact_path: str,
    metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Log the folder (or file) ``files`` under ``artifact_path`` of run ``run_id`` with numeric ``metrics``
    (nested → dotted keys; non-finite values skipped) and ``tags``; return :func:`artifact_location` of
    ``artifact_path``."""
    c = get_client(tracking_uri)
    files = Path(files)
    if metrics or tags:
        c.log_batch(run_id, metrics=_metrics(flatten(metrics or {})), tags=_tags(tags or {}))
    if files.is_dir():
        c.log_artifacts(run_id, str(files), artifact_path=artifact_path)
    else:
        c.log_artifact(run_id, str(files), artifact_path=artifact_path)
    location = artifact_location(tracking_uri, run_id, artifact_path)
    log.info("report %s logged on run %s: %s", files.name, run_id, location)
    return location


def log_page(tracking_uri: str | None, run_id: str, text: str, artifact_file: str) -> str:
    """Write ``text`` as the artifact ``artifact_file`` of run ``run_id`` (replacing one already there); return
    :func:`artifact_location` of it."""
    get_client(tracking_uri).log_text(run_id, text, artifact_file)
    return artifact_location(tracking_uri, run_id, artifact_file)
