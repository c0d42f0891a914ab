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

#: folder of the evaluation's files on the parent run (the default of :func:`mdctr.tracking.log_evaluation`)
EVALUATION_ARTIFACTS = "evaluation"


def artifact_location(tracking_uri: str | None, run_id: str, path: str) -> str:
    """Where ``path`` (relative to the run's artifact root) can be opened: the MLflow UI page for an http(s)
    tracking server, else the artifact store location (a local path for a file store)."""
    c = get_client(tracking_uri)
    run = c.get_run(run_id)
    uri = (tracking_uri or c.tracking_uri or "").rstrip("/")
    if uri.startswith(("http://", "https://")):
        return f"{uri}/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/{path}"
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
