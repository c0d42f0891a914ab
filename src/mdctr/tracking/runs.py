"""Runs: one parent run per pipeline run, one nested run per trained model, evaluation artifacts on the parent.

Metrics and params go in batches (one request per kind) because every call is a round trip to the server.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

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


# MLflow accepts only word characters, ``_ - . / :`` and space in a metric key; ``.`` separates the parts of
# ours (``domain.<name>.auc``) and ``/`` would make a path of it, so a name keeps word characters, ``-`` and
# spaces, and every other character becomes a short word between underscores: ``<25`` → ``_lt_25``,
# ``56+`` → ``56_plus_``. The raw name of each changed part is recorded (run tag ``mdctr.key.<part>``), so a
# key is read back exactly (:func:`raw_key_parts`), and reports show the raw name.
_KEY_KEEP = re.compile(r"[\w\- ]")
_KEY_WORDS = {
    "<": "lt",
    ">": "gt",
    "=": "eq",
    "+": "plus",
    "%": "pct",
    "&": "and",
    "|": "or",
    "!": "not",
    "#": "num",
    "@": "at",
    "*": "star",
    ",": "comma",
    ".": "dot",
    "/": "slash",
    ":": "colon",
    "(": "lp",
    ")": "rp",
    "[": "lb",
    "]": "rb",
    "$": "usd",
    "'": "q",
    '"': "qq",
    "~": "tilde",
    "?": "qm",
}
#: run-tag prefix recording the raw text of an encoded metric-key part: ``mdctr.key.<part>`` = raw text
TAG_KEY_PREFIX = "mdctr.key."


def metric_key_part(text: str) -> str:
    """``text`` as one part of an MLflow metric key, readable and faithful: kept as is when MLflow accepts it
    (``25-34``, ``young``, ``Москва``), else each other character spelled as ``_<word>_`` (``<25`` →
    ``_lt_25``, ``>=56`` → ``_gt__eq_56``; a character without a word → ``_u<hex>_``)."""
    text = str(text).strip()
    out = []
    for ch in text:
        if _KEY_KEEP.fullmatch(ch) and ch.isprintable():
            out.append(ch)
        else:
            out.append(f"_{_KEY_WORDS.get(ch, f'u{ord(ch):04x}')}_")
    return "".join(out) or "_"


def domain_metric_key(domain: int | str, metric: str) -> str:
    """Run metric key of a per-domain metric: ``domain.<name>.<metric>`` (``domain.<id>.<metric>`` when the
    domain has no name), the name encoded by :func:`metric_key_part`."""
    return f"domain.{metric_key_part(str(domain))}.{metric}"


def _domain_parts(per_domain: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str, str]]:
    """(entry, key part, raw label) per domain; a name that encodes like an earlier one gets ``_<id>``
    appended, so two domains never share a metric."""
    out, seen = [], set()
    for entry in per_domain:
        raw = str(entry.get("name") or int(entry["domain"]))
        part = metric_key_part(raw)
        if part in seen:
            part = f"{part}_{int(entry['domain'])}"
        seen.add(part)
        out.append((entry, part, raw))
    return out


def per_domain_metrics(per_domain: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``[{"domain": 0, "name": "young", "auc": .7, ...}]`` → ``{"domain.young.auc": .7, ...}`` (numeric fields
    only; the id when an entry has no name; names encoded by :func:`metric_key_part`)."""
    out: dict[str, float] = {}
    for entry, part, _ in _domain_parts(per_domain):
        out.update(
            {
                f"domain.{part}.{k}": float(v)
                for k, v in entry.items()
                if k not in ("domain", "name") and _is_number(v)
            }
        )
    return out


def key_part_tags(per_domain: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``{"mdctr.key.<part>": raw name}`` for every domain whose key part differs from its raw name."""
    return {f"{TAG_KEY_PREFIX}{part}": raw for _, part, raw in _domain_parts(per_domain) if part != raw}


def raw_key_parts(tags: Mapping[str, str]) -> dict[str, str]:
    """The recorded ``{key part: raw text}`` of a run (from its ``mdctr.key.*`` tags)."""
    return {k[len(TAG_KEY_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_KEY_PREFIX)}


def raw_metric_key(key: str, tags: Mapping[str, str]) -> str:
    """A run's metric key with its domain part shown raw: ``domain._lt_25.auc`` → ``domain.<25.auc`` (given
    the run's tags); keys without a recorded part are returned unchanged."""
    parts = raw_key_parts(tags)
    head, sep, rest = key.partition(".")
    if head == "domain" and sep:
        part, dot, metric = rest.rpartition(".")
        if dot and part in parts:
            return f"domain.{parts[part]}.{metric}"
    return key


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


#: seconds between system-metric samples of a training run (MLflow's default of 10 s misses short runs)
SYSTEM_METRICS_INTERVAL_S = 1.0


@dataclass(frozen=True)
class DatasetRef:
    """One split as an ``mlflow.data`` input of a training run.

    Attributes:
        context: ``train``/``validation``/``test`` (MLflow's ``mlflow.data.context`` input tag).
        name: the dataset (schema name); ``rows``: rows in the split.
        source: where the data comes from (dataset, DVC revision, md5s), stored as the source JSON.
        digest: the data version's md5 (the ``data.dvc`` md5 when the data is DVC-tracked).
    """

    context: str
    name: str
    rows: int
    source: Mapping[str, Any]
    digest: str


class TrainingRun:
    """A training run nested under the pipeline's parent run, opened *before* training.

    Use as a context manager around training: system metrics (CPU, memory, disk, network; GPU when present)
    are sampled every :data:`SYSTEM_METRICS_INTERVAL_S` while it is open, :meth:`log_epoch` logs each epoch's
    record live (``step`` = epoch), and leaving the block ends the run FINISHED (FAILED on an exception), so
    the run's duration is the training's. Logging goes through the client (no fluent active-run state).
    """

    def __init__(
        self,
        tracking_uri: str | None,
        parent_run_id: str,
        *,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        datasets: Sequence[DatasetRef] = (),
        system_metrics: bool = True,
    ):
        self.uri = configure(tracking_uri)
        self.client = mlflow.MlflowClient(self.uri, registry_uri=self.uri)
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        all_tags = {"mlflow.parentRunId": parent_run_id, **{k: v for k, v in (tags or {}).items()}}
        run = self.client.create_run(
            exp.experiment_id,
            run_name=run_name,
            tags={k: str(v) for k, v in all_tags.items() if v is not None},
        )
        self.run_id = run.info.run_id
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        if params:
            self.log_params(params)
        if datasets:
            log_datasets(self.client, self.run_id, datasets)
        self._monitor = self._start_monitor() if system_metrics else None
        log.info("training run %s (%s) opened under %s", self.run_id, run_name, parent_run_id)

    def _start_monitor(self) -> Any:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:  # psutil missing: MLflow cannot sample
            log.warning("psutil is not installed: no system metrics for run %s", self.run_id)
            return None
        monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=self.uri
        )
        monitor.start()
        return monitor

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        monitor.finish()
        # MLflow samples at once but only publishes after a full interval: a run shorter than that would end
        # with its one sample unpublished, so publish what was collected since the last interval
        pending = monitor.aggregate_metrics()
        if pending:
            monitor.publish_metrics(pending)
            monitor.mlflow_logger.flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested → dotted) params; a key may be logged once, or again with the same value."""
        self.client.log_batch(self.run_id, params=_params(params))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """The trainer's ``on_epoch`` callback: log one epoch's numbers now, ``step`` = its ``epoch``."""
        step = int(record.get("epoch", 0))
        self.client.log_batch(
            self.run_id, metrics=_metrics({k: v for k, v in record.items() if k != "epoch"}, step=step)
        )

    def log_results(
        self,
        *,
        metrics: Mapping[str, Any] | None = None,
        per_domain: Sequence[Mapping[str, Any]] = (),
        artifacts: Sequence[Path | str] = (),
    ) -> None:
        """Final metrics, per-domain metrics (``domain.<name>.<metric>``, names encoded by
        :func:`metric_key_part` with their raw text as ``mdctr.key.*`` tags, and the table ``per_domain.json``
        with the raw names) and artifact files or directories."""
        final = {**dict(metrics or {}), **per_domain_metrics(per_domain)}
        # the raw domain names behind encoded keys (``domain._lt_25.auc`` ← ``<25``)
        self.client.log_batch(self.run_id, metrics=_metrics(final), tags=_tags(key_part_tags(per_domain)))
        if per_domain:
            self.client.log_table(
                self.run_id, pd.DataFrame(list(per_domain)), artifact_file="per_domain.json"
            )
        for path in map(Path, artifacts):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        """Stop sampling and close the run."""
        self._stop_monitor()
        self.client.set_terminated(self.run_id, status=status)
        log.info("training run %s (%s) %s", self.run_id, self.run_name, status)

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.end("FAILED" if exc_type is not None else "FINISHED")


def log_datasets(client: mlflow.MlflowClient, run_id: str, datasets: Sequence[DatasetRef]) -> None:
    """Attach each split as an ``mlflow.data`` dataset input (source = the DVC revision and md5s, digest =
    the md5, profile = its row count, context tag = train/validation/test)."""
    inputs = [
        DatasetInput(
            Dataset(
                name=d.name,
                digest=d.digest,
                source_type="dvc",
                source=json.dumps(dict(d.source), sort_keys=True),
                profile=json.dumps({"num_rows": int(d.rows)}),
            ),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)],
        )
        for d in datasets
    ]
    # Two training tasks of one pipeline run log the same splits at the same moment; the store checks whether a
    # dataset exists, then inserts it, so the slower one can fail on the unique (experiment, name, digest) key
    # (SQLite: "UNIQUE constraint failed", PostgreSQL: "duplicate key value"). By then the dataset exists, and
    # logging again only links it to this run.
    for attempt in range(DATASET_LOG_ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as e:
            if attempt + 1 == DATASET_LOG_ATTEMPTS or not _is_unique_violation(e):
                raise
            log.info("dataset inputs of run %s raced another run's; logging them again", run_id)


#: tries of :func:`log_datasets` when another run inserted the same dataset at the same moment
DATASET_LOG_ATTEMPTS = 3


def _is_unique_violation(error: Exception) -> bool:
    """A store error caused by a unique key (a row another writer inserted first)."""
    text = f"{error} {error.__cause__}"
    return any(s in text for s in ("UNIQUE constraint failed", "duplicate key value", "IntegrityError"))


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
    """Log an already trained model as a run nested under ``parent_run_id``; return its run id.

    For a model trained elsewhere (tests, imports). The pipeline opens a :class:`TrainingRun` before training
    instead, so the run's duration, system metrics and epoch curves are the training's own.

    Args:
        params: hyper-parameters (nested dicts are flattened to dotted keys).
        history: one dict per epoch; numeric values become metric curves with ``step`` = the ``epoch`` field.
        metrics: final test metrics, e.g. ``auc``, ``logloss``, ``flops_per_sample``, ``dense_params``.
        per_domain: one dict per hand-crafted domain (``domain`` id, ``name``, ``auc``, ``logloss``, ``rows`` …):
            logged as metrics ``domain.<name>.<metric>`` and as the table ``per_domain.json``.
        artifacts: files or directories to attach.
        system_metrics: sample CPU/memory while the run is open.
    """
    with TrainingRun(
        tracking_uri,
        parent_run_id,
        run_name=run_name,
        params=params,
        tags=tags,
        system_metrics=system_metrics,
    ) as run:
        for i, epoch in enumerate(history):
            run.log_epoch({"epoch": i, **epoch})
        run.log_results(metrics=metrics, per_domain=per_domain, artifacts=artifacts)
    return run.run_id


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


def tag_run(tracking_uri: str | None, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags on a run (values as strings; None values skipped), e.g. the parent run's winner and gate."""
    get_client(tracking_uri).log_batch(run_id, tags=_tags(tags))


def log_run_params(tracking_uri: str | None, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params on a run (nested → dotted keys); a key may be logged again only with the same value."""
    get_client(tracking_uri).log_batch(run_id, params=_params(params))


def describe_version(tracking_uri: str | None, version: str | int, description: str, *, name: str) -> None:
    """Set the description of a version of registered model ``name`` (what the registry UI shows under it)."""
    get_client(tracking_uri).update_model_version(name, str(version), description=description)
