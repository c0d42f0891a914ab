"""Monitoring runs: one MLflow run per monitored window, in the experiment ``mdctr-monitoring``.

A separate experiment keeps the daily monitoring runs out of the training leaderboard's experiment; its name
derives from :data:`mdctr.tracking.names.EXPERIMENT`. Metrics are logged with ``step`` = the window's end
(unix seconds) and the timestamp of the window's end, so MLflow's metric charts show them over serving time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

from mdctr.tracking.names import EXPERIMENT, EXPERIMENT_KIND, TAG_EXPERIMENT_KIND
from mdctr.tracking.reports import artifact_location
from mdctr.tracking.runs import _metrics, _params, _tags, metric_key_part
from mdctr.tracking.setup import _local_artifact_root
from mdctr.tracking.setup import client as get_client

log = logging.getLogger(__name__)

MONITORING_EXPERIMENT = f"{EXPERIMENT}-monitoring"
#: artifact folder of the report on the monitoring run
MONITORING_ARTIFACTS = "monitoring"
TAG_MONITOR_STATUS = "mdctr.monitor_status"
TAG_MONITORED_MODEL = "mdctr.monitored_model"
TAG_MONITORED_VERSION = "mdctr.monitored_version"


def _experiment_id(c: mlflow.MlflowClient) -> str:
    exp = c.get_experiment_by_name(MONITORING_EXPERIMENT)
    if exp is None:
        try:
            return c.create_experiment(
                MONITORING_EXPERIMENT,
                artifact_location=_local_artifact_root(c.tracking_uri),
                tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND},
            )
        except mlflow.exceptions.MlflowException:
            exp = c.get_experiment_by_name(MONITORING_EXPERIMENT)  # another run created it meanwhile
            if exp is None:
                raise
    return exp.experiment_id


def log_monitoring_run(
    tracking_uri: str | None,
    *,
    run_name: str,
    metrics: Mapping[str, float],
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    files: Path | str | None = None,
    step: int = 0,
    timestamp_ms: int | None = None,
    failed: bool = False,
) -> tuple[str, str]:
    """Create a finished run (FAILED when a threshold was crossed) holding ``metrics`` (at ``step`` and
    ``timestamp_ms``), ``params``, ``tags`` and the report folder ``files`` under ``monitoring/``; return
    (run id, where the report is)."""
    c = get_client(tracking_uri)
    # domain names such as ``age<25`` are not valid in a metric key: each dotted part is encoded
    safe = {".".join(metric_key_part(p) for p in k.split(".")): v for k, v in metrics.items()}
    run = c.create_run(_experiment_id(c), run_name=run_name)
    run_id = run.info.run_id
    c.log_batch(
        run_id,
        metrics=_metrics(safe, step=step, ts=timestamp_ms),
        params=_params(params or {}),
        tags=_tags({TAG_MONITOR_STATUS: "breach" if failed else "ok", **dict(tags or {})}),
    )
    location = ""
    if files is not None:
        c.log_artifacts(run_id, str(files), artifact_path=MONITORING_ARTIFACTS)
        location = artifact_location(tracking_uri, run_id, MONITORING_ARTIFACTS)
    c.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
    log.info("monitoring run %s in %s: %s", run_id, MONITORING_EXPERIMENT, location or "(no files)")
    return run_id, location
