"""Runs: one parent run per pipeline run, one nested run per trained model, evaluation artifacts on the parent.

Metrics and params go in batches (one request per kind) because every call is a round trip to the server.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag

from mdctr.tracking.names import EXPERIMENT, TAG_DATA_MD5, TAG_DATA_REV, TAG_GIT_SHA, TAG_KFP_RUN_ID
from mdctr.tracking.setup import client as get_client
from mdctr.tracking.setup import configure

log = logging.getLogger(__name__)

#: MLflow caps param values at 6000 characters; longer values are cut with a marker
MAX_PARAM_LEN = 6000


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys (``{"model": {"hidden": [8]}}`` → ``{"model.hidden": [8]}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _params(params: Mapping[str, Any]) -> list[Param]:
    out = []
    for k, v in flatten(params).items():
        s = str(v)
        out.append(Param(k, s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."))
    return out


def _tags(tags: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)) for k, v in tags.items() if v is not None]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _metrics(values: Mapping[str, Any], *, step: int = 0, ts: int | None = None) -> list[Metric]:
    ts = ts or int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in values.items() if _is_number(v)]


def domain_metric_key(domain: int, metric: str) -> str:
    """Run metric / version tag key of a per-domain metric: ``domain.<id>.<metric>``."""
    return f"domain.{int(domain)}.{metric}"


def per_domain_metrics(per_domain: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``[{"domain": 0, "auc": .7, ...}]`` → ``{"domain.0.auc": .7, ...}`` (numeric fields only)."""
    out: dict[str, float] = {}
    for entry in per_domain:
        d = int(entry["domain"])
        out.update(
            {domain_metric_key(d, k): float(v) for k, v in entry.items() if k != "domain" and _is_number(v)}
        )
    return out


def start_parent_run(
    tracking_uri: str | None,
    *,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    data_rev: str | None = None,
    data_md5: str | None = None,
    git_sha: str | None = None,
    kfp_run_id: str | None = None,
) -> str:
    """Create the pipeline run's parent run (left open: status RUNNING until :func:`end_parent_run`).

    The data revision and md5, git sha and KFP run id become tags (``mdctr.*``) when given, either through
    the keyword arguments or already inside ``tags``.
    """
    c = get_client(tracking_uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    all_tags = {
        TAG_DATA_REV: data_rev,
        TAG_DATA_MD5: data_md5,
        TAG_GIT_SHA: git_sha,
        TAG_KFP_RUN_ID: kfp_run_id,
        **dict(tags or {}),
    }
    run = c.create_run(
        exp.experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items() if v is not None}
    )
    c.log_batch(run.info.run_id, params=_params(params or {}))
    log.info("parent run %s (%s) in experiment %s", run.info.run_id, run_name, exp.experiment_id)
    return run.info.run_id


def end_parent_run(tracking_uri: str | None, run_id: str, *, status: str = "FINISHED") -> None:
    """Close a parent run (``FINISHED`` or ``FAILED``)."""
    get_client(tracking_uri).set_terminated(run_id, status=status)


#: parent-run tags the exit handler writes when the pipeline fails
TAG_FAILED_TASK = "mdctr.failed_task"
TAG_FAILURE = "mdctr.failure"


def fail_parent_runs(
    tracking_uri: str | None,
    *,
    kfp_run_id: str,
    succeeded: bool,
    failed_task: str = "",
    message: str = "",
) -> list[str]:
    """Close the open parent run(s) tagged with ``kfp_run_id``: FAILED (with the failing task and message as
    tags) unless the pipeline ``succeeded``, then FINISHED. Runs already closed are left alone; returns the ids
    changed. Found by tag because the exit handler cannot consume outputs of the tasks it guards."""
    if not kfp_run_id:
        raise ValueError("kfp_run_id is empty: the exit handler cannot find the parent run")
    c = get_client(tracking_uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs = c.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{TAG_KFP_RUN_ID}` = '{kfp_run_id.replace(chr(39), '')}'"
    )
    changed = []
    for run in runs:
        if run.info.status != "RUNNING":
            continue
        if not succeeded:
            c.set_tag(run.info.run_id, TAG_FAILED_TASK, failed_task or "?")
            c.set_tag(run.info.run_id, TAG_FAILURE, (message or "failed")[:5000])
        c.set_terminated(run.info.run_id, status="FINISHED" if succeeded else "FAILED")
        changed.append(run.info.run_id)
        log.info(
            "parent run %s of KFP run %s: %s%s",
            run.info.run_id,
            kfp_run_id,
            "FINISHED" if succeeded else "FAILED",
            "" if succeeded else f" ({failed_task}: {message})",
        )
    return changed


def record_failure(
    tracking_uri: str | None, *, started_after_ms: int, failed_task: str, message: str
) -> list[str]:
    """Name the failing task and its error on the parent run(s) of a pipeline run started at or after
    ``started_after_ms`` (and mark them FAILED if still open). For local runs, where the orchestrator knows
    which task failed but the exit task only sees the failed exit-handler group. Returns the ids changed."""
    c = get_client(tracking_uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"attributes.start_time >= {int(started_after_ms)} and tags.`{TAG_KFP_RUN_ID}` != ''",
    )
    changed = []
    for run in runs:
        if run.info.status not in ("RUNNING", "FAILED"):
            continue
        c.set_tag(run.info.run_id, TAG_FAILED_TASK, failed_task)
        c.set_tag(run.info.run_id, TAG_FAILURE, message[:5000])
        if run.info.status == "RUNNING":
            c.set_terminated(run.info.run_id, status="FAILED")
        changed.append(run.info.run_id)
        log.info("parent run %s: failed in %s: %s", run.info.run_id, failed_task, message)
    return changed


def log_training_run(
    tracking_uri: str | None,
    parent_run_id: str,
    *,
    run_name: str,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] = (),
    metrics: Mapping[str, Any] | None = None,
    per_domain: Sequence[Mapping[str, Any]] = (),
    tags: Mapping[str, Any] | None = None,
    artifacts: Sequence[Path | str] = (),
    system_metrics: bool = True,
) -> str:
    """Log one trained model as a run nested under ``parent_run_id``; return its run id.

    Args:
        params: hyper-parameters (nested dicts are flattened to dotted keys).
        history: one dict per epoch; numeric values become metric curves with ``step`` = the ``epoch`` field
            (or the position in the list).
        metrics: final test metrics, e.g. ``auc``, ``logloss``, ``flops_per_sample``, ``dense_params``.
        per_domain: one dict per hand-crafted domain (``domain`` id, ``name``, ``auc``, ``logloss``, ``rows`` …):
            logged as metrics ``domain.<id>.<metric>`` and as the table ``per_domain.json``.
        artifacts: files or directories to attach.
        system_metrics: sample CPU/memory while the run is open (needs psutil; skipped if it is missing).
    """
    configure(tracking_uri)
    try:
        import psutil  # noqa: F401  (system metrics need it)
    except ImportError:
        system_metrics = False
    with mlflow.start_run(
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags={k: str(v) for k, v in (tags or {}).items()},
        log_system_metrics=system_metrics,
    ) as run:
        run_id = run.info.run_id
        c = mlflow.MlflowClient()
        ts = int(time.time() * 1000)
        curve: list[Metric] = []
        for i, epoch in enumerate(history):
            step = int(epoch.get("epoch", i))
            curve += _metrics({k: v for k, v in epoch.items() if k != "epoch"}, step=step, ts=ts)
        final = {**dict(metrics or {}), **per_domain_metrics(per_domain)}
        c.log_batch(run_id, metrics=curve + _metrics(final, ts=ts), params=_params(params))
        if per_domain:
            mlflow.log_table(pd.DataFrame(list(per_domain)), artifact_file="per_domain.json", run_id=run_id)
        for path in map(Path, artifacts):
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
    log.info("training run %s (%s) under %s", run_id, run_name, parent_run_id)
    return run_id


def log_evaluation(
    tracking_uri: str | None,
    parent_run_id: str,
    *,
    metrics: Mapping[str, Any] | None = None,
    artifact_dir: Path | str | None = None,
    artifact_path: str = "evaluation",
) -> None:
    """Attach the evaluation (leaderboard, plots, report: everything in ``artifact_dir``) and its headline
    numeric ``metrics`` to the parent run."""
    c = get_client(tracking_uri)
    if metrics:
        c.log_batch(parent_run_id, metrics=_metrics(flatten(metrics)))
    if artifact_dir is not None:
        c.log_artifacts(parent_run_id, str(artifact_dir), artifact_path=artifact_path)
    log.info("evaluation logged on parent run %s", parent_run_id)
