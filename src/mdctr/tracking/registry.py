"""Model registry: log a bundle as a pyfunc and register it (alias ``challenger``), the promotion gate, and
promotion (alias ``champion``).

Every dataset registers under its own model (``mdctr-<schema name>``, :func:`mdctr.tracking.names.
registered_model_name`); every function here takes that registered model's ``name``, so a version of one dataset
is never gated against, or replaces, the champion of another.

The gate reads the test metrics stored as model-version tags at registration (``metric.<name>`` overall,
``domain.<id>.<name>`` per hand-crafted domain), so it compares any two versions without opening their runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

import mdctr
from mdctr.schema import FeatureSchema
from mdctr.tracking.loading import RegistryError, load_registered
from mdctr.tracking.names import (
    ACTION_FORCE,
    ACTION_PROMOTE,
    ACTION_ROLLBACK,
    CHALLENGER,
    CHAMPION,
    DOMAIN_TAG_PREFIX,
    GATE_TAG_PREFIX,
    HIGHER_IS_BETTER,
    HISTORY_ACTIONS,
    KEEP,
    METRIC_TAG_PREFIX,
    MODEL_NAME_IN_RUN,
    PROMOTE,
    REGISTERED_MODEL_PREFIX,
    TAG_BUNDLE_MODEL,
    TAG_DOMAIN_SOURCE,
    TAG_SCHEMA,
    TAG_SCHEMA_HASH,
    registered_model_name,
)
from mdctr.tracking.pyfunc import BUNDLE_DATA
from mdctr.tracking.setup import client as get_client
from mdctr.tracking.setup import configure

log = logging.getLogger(__name__)

#: distributions inference imports (the pyfunc, the bundle and the models); pinned from requirements.lock
INFERENCE_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pyyaml")


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version: ``model_uri`` = ``models:/<name>/<version>``."""

    name: str
    version: str
    model_uri: str


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate for one registered version.

    Attributes:
        promote: whether the challenger should become champion.
        reason: one sentence saying why.
        metric: the compared metric (``auc`` by default); ``tolerance``: allowed per-domain regression.
        version / champion_version: compared versions (champion None when there is none yet).
        challenger / champion: overall metric values read from version tags.
        domain_deltas: per hand-crafted domain id, challenger − champion in the improving direction
            (positive = better; a value below −tolerance blocks promotion).
    """

    promote: bool
    reason: str
    metric: str
    tolerance: float
    version: str
    champion_version: str | None
    challenger: dict[str, float]
    champion: dict[str, float]
    domain_deltas: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["domain_deltas"] = {str(k): v for k, v in self.domain_deltas.items()}
        return d


# -- requirements --------------------------------------------------------------------------------
def _lock_file() -> Path | None:
    root = Path(mdctr.__file__).resolve().parents[2]
    lock = root / "requirements.lock"
    return lock if lock.is_file() else None


def inference_requirements() -> list[str]:
    """Exact pins of what serving imports: from ``requirements.lock`` in a checkout, else the installed versions
    (an installed image is built from the same lock)."""
    wanted = {p.lower() for p in INFERENCE_PACKAGES}
    pins: dict[str, str] = {}
    lock = _lock_file()
    if lock is not None:
        for line in lock.read_text().splitlines():
            name, sep, _ = line.strip().partition("==")
            if sep and name.lower() in wanted:
                pins[name.lower()] = line.strip()
    for name in sorted(wanted - set(pins)):
        try:
            pins[name] = f"{name}=={installed_version(name)}"
        except PackageNotFoundError:
            log.warning("inference requirement %s is neither locked nor installed", name)
    return [pins[k] for k in sorted(pins)]


# -- registration -----------------------------------------------------------------------------------------
def _metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    tags = {f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.get("overall", {}).items()}
    for entry in metrics.get("per_domain", []):
        d = int(entry["domain"])
        for k, v in entry.items():
            if k != "domain" and isinstance(v, int | float) and not isinstance(v, bool):
                tags[f"{DOMAIN_TAG_PREFIX}{d}.{k}"] = repr(float(v))
    return tags


def register_bundle(
    tracking_uri: str | None,
    bundle_dir: Path | str,
    *,
    run_id: str,
    input_example: pd.DataFrame,
    alias: str = CHALLENGER,
    name: str | None = None,
) -> RegisteredVersion:
    """Log ``bundle_dir`` as a pyfunc model in run ``run_id``, register it under ``name`` (default: its
    dataset's model, ``mdctr-<schema name>``), store its test metrics as version tags and point alias
    ``challenger`` at it.

    The pyfunc is loaded by the installed module ``mdctr.tracking.pyfunc`` (``loader_module``) from the bundle
    stored as the model's ``data/bundle``: weights and JSON only, no pickled Python object and no code folder.
    No signature is logged on purpose: MLflow's signature enforcement casts request values before ``predict``
    sees them (``"5"`` or ``1.9`` → ``5`` for an integer id), hiding client bugs that mdctr's own strict
    checks answer with a 400. The input example (raw serving columns) still documents the request format.
    """
    # here, not at the top: the bundle brings torch and the model zoo (~4 s), which the tasks that only open,
    # tag or close runs (start-run, validate-data, promote-model, finish-run) never use
    from mdctr.serving.bundle import Predictor, read_metrics

    uri = configure(tracking_uri)
    bundle_dir = Path(bundle_dir).resolve()
    predictor = Predictor.load(bundle_dir)
    example = input_example[list(predictor.required_columns)].head(5).reset_index(drop=True)
    predictor.predict(example)  # fail here, not in serving, if the example does not score
    metrics = read_metrics(bundle_dir)
    name = name or registered_model_name(predictor.spec.schema.name)
    c = mlflow.MlflowClient(uri, registry_uri=uri)
    before = c.get_run(run_id).info
    with tempfile.TemporaryDirectory(prefix="mdctr-model-") as tmp, mlflow.start_run(run_id=run_id):
        # a fixed directory name, so the model's layout is always data/bundle (mdctr.serving.bundle_dir_of)
        data = Path(tmp) / BUNDLE_DATA
        shutil.copytree(bundle_dir, data)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            loader_module="mdctr.tracking.pyfunc",
            data_path=str(data),
            input_example=example,
            signature=False,
            pip_requirements=inference_requirements(),
        )
    _restore_run_state(c, run_id, before)
    mv = mlflow.register_model(info.model_uri, name)
    tags = {
        **_metric_tags(metrics),
        TAG_BUNDLE_MODEL: predictor.info.model_name,
        TAG_DOMAIN_SOURCE: predictor.info.domain_source,
    }
    for k, v in tags.items():
        c.set_model_version_tag(name, mv.version, k, v)
    c.set_registered_model_alias(name, alias, mv.version)
    log.info("registered %s version %s (alias %s) from run %s", name, mv.version, alias, run_id)
    return RegisteredVersion(name, str(mv.version), f"models:/{name}/{mv.version}")


def _restore_run_state(c: mlflow.MlflowClient, run_id: str, before: Any) -> None:
    """Undo what reopening a run to log the model did to it: ``log_model`` needs an active run, and leaving
    ``mlflow.start_run(run_id=…)`` ends the run *now* — a winner trained in 3 s would show the minutes until
    registration as its duration, and a parent run (still RUNNING) would be closed before the pipeline ends."""
    if before.status == "RUNNING":
        c.update_run(run_id, status="RUNNING")
    else:
        c.set_terminated(run_id, status=before.status, end_time=before.end_time)


def version_metrics(
    tracking_uri: str | None, version: str | int, *, name: str
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per-domain) test metrics stored on a version's tags of registered model ``name``."""
    mv = get_client(tracking_uri).get_model_version(name, str(version))
    overall: dict[str, float] = {}
    domains: dict[int, dict[str, float]] = {}
    for k, v in mv.tags.items():
        if k.startswith(METRIC_TAG_PREFIX):
            overall[k[len(METRIC_TAG_PREFIX) :]] = float(v)
        elif k.startswith(DOMAIN_TAG_PREFIX):
            d, _, name = k[len(DOMAIN_TAG_PREFIX) :].partition(".")
            domains.setdefault(int(d), {})[name] = float(v)
    return overall, domains


def _champion_version(c: mlflow.MlflowClient, name: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None  # no alias yet (or no such model): nothing to beat


def schema_fingerprint(schema: FeatureSchema) -> str:
    """A short hash of what a model's inputs and its domains mean: columns, roles and domain names."""
    key = {
        "name": schema.name,
        "sparse": list(schema.sparse),
        "dense": list(schema.dense),
        "label": schema.label,
        "domain": schema.domain,
        "domain_names": list(schema.domain_names),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def tag_schema(tracking_uri: str | None, version: str | int, schema: FeatureSchema, *, name: str) -> None:
    """Record on a version of registered model ``name`` which dataset (schema name) and feature schema it was
    trained on."""
    c = get_client(tracking_uri)
    c.set_model_version_tag(name, str(version), TAG_SCHEMA, schema.name)
    c.set_model_version_tag(name, str(version), TAG_SCHEMA_HASH, schema_fingerprint(schema))


@dataclass(frozen=True)
class ValidationSet:
    """The current validation split as served: raw rows (``schema.serving_columns``), labels and hand-crafted
    domain ids, and the schema it belongs to. The gate scores champion and challenger on exactly these rows."""

    frame: pd.DataFrame
    labels: np.ndarray
    domains: np.ndarray
    schema: FeatureSchema


def _score(
    tracking_uri: str | None, name: str, version: str, validation: ValidationSet, metric: str
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per hand-crafted domain) ``metric`` of a registered version on ``validation``, predicted by
    the version's own bundle loaded through :func:`mdctr.tracking.loading.load_registered` (the served code,
    nothing from the store executed; an unsafe version raises :class:`UnsafeModelError`)."""
    from sklearn.metrics import log_loss, roc_auc_score

    if metric not in ("auc", "logloss"):
        raise ValueError(f"the gate re-scores 'auc' or 'logloss' on validation, not {metric!r}")
    loaded = load_registered(tracking_uri, name, version)
    probs = np.asarray(loaded.predictor.predict(validation.frame), dtype=np.float64)
    y = validation.labels

    def value(mask: np.ndarray) -> float:
        if len(np.unique(y[mask])) < 2:
            return math.nan
        if metric == "auc":
            return float(roc_auc_score(y[mask], probs[mask]))
        return float(log_loss(y[mask], np.clip(probs[mask], 1e-7, 1 - 1e-7), labels=[0, 1]))

    overall = {metric: value(np.ones(len(y), dtype=bool))}
    per_domain = {}
    for d in range(validation.schema.num_domains):
        v = value(validation.domains == d)
        if math.isfinite(v):
            per_domain[d] = {metric: v}
    return overall, per_domain


def _schema_mismatch(c: mlflow.MlflowClient, name: str, challenger: str, champion: str) -> str | None:
    """Why two versions must not be compared (different dataset or feature schema), or None."""
    tags = [c.get_model_version(name, v).tags for v in (challenger, champion)]
    for key, what in ((TAG_SCHEMA, "dataset"), (TAG_SCHEMA_HASH, "feature schema")):
        mine, theirs = tags[0].get(key), tags[1].get(key)
        if mine != theirs:
            return (
                f"refusing to compare: challenger v{challenger} and {CHAMPION} v{champion} were trained on "
                f"different {what}s ({mine!r} vs {theirs!r})"
            )
    return None


def decide_promotion(
    tracking_uri: str | None,
    version: str | int,
    *,
    name: str,
    tolerance: float = 0.002,
    metric: str = "auc",
    validation: ValidationSet | None = None,
) -> GateDecision:
    """Should ``version`` of registered model ``name`` replace that model's champion? Writes the decision and
    its numbers as ``gate.*`` version tags.

    Only versions of one registered model are compared, and each dataset registers under its own model
    (:func:`mdctr.tracking.names.registered_model_name`). Rules: no champion yet → promote. A champion of another dataset or feature schema (version tags
    ``mdctr.schema``/``mdctr.schema_hash``, see :func:`tag_schema`) is never compared: the challenger is kept.
    Otherwise promote only if the challenger is strictly better than the champion on ``metric`` overall AND on
    no hand-crafted domain the champion was measured on is it worse by more than ``tolerance`` (a domain
    missing from the challenger counts as a regression).

    With ``validation`` (the current validation split, raw rows) both versions are re-scored on those same
    rows, so the comparison is on validation data of this run, never on stale tags; without it the metrics
    stored on the version tags are compared.

    Either way both versions are opened through :func:`mdctr.tracking.loading.load_registered` (bundle loader,
    weights + JSON): a version whose stored files name another loader module, carry a ``code/`` folder or a
    pickle raises :class:`mdctr.tracking.loading.UnsafeModelError` and no decision is written.
    """
    c = get_client(tracking_uri)
    version = str(version)
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    champ_version = _champion_version(c, name)
    rival = champ_version not in (None, version)
    mismatch = _schema_mismatch(c, name, version, champ_version) if rival else None
    # every version the gate touches is opened the safe way before any decision is written
    champ_scored = None
    if validation is not None:
        chall_all, chall_dom = _score(tracking_uri, name, version, validation, metric)
        if rival and mismatch is None:
            champ_scored = _score(tracking_uri, name, str(champ_version), validation, metric)
    else:
        load_registered(tracking_uri, name, version)
        chall_all, chall_dom = version_metrics(tracking_uri, version, name=name)
    if rival and champ_scored is None:
        load_registered(tracking_uri, name, str(champ_version))
    champ_all: dict[str, float] = {}
    deltas: dict[int, float] = {}
    if mismatch is not None:
        promote, reason = False, mismatch
    elif metric not in chall_all:
        promote, reason = False, f"version {version} has no overall test {metric!r} to compare"
    elif champ_version is None:
        promote, reason = True, f"no {CHAMPION} yet; version {version} becomes the first"
    elif champ_version == version:
        promote, reason = False, f"version {version} is already the {CHAMPION}"
    else:
        if champ_scored is not None:
            champ_all, champ_dom = champ_scored
        else:
            champ_all, champ_dom = version_metrics(tracking_uri, champ_version, name=name)
        for d, vals in sorted(champ_dom.items()):
            if metric in vals:
                mine = chall_dom.get(d, {}).get(metric)
                deltas[d] = float("-inf") if mine is None else sign * (mine - vals[metric])
        overall_delta = sign * (chall_all[metric] - champ_all[metric]) if metric in champ_all else 0.0
        worst = [d for d, dv in deltas.items() if dv < -tolerance]
        if metric not in champ_all:
            promote, reason = True, f"{CHAMPION} v{champ_version} has no {metric!r}; challenger replaces it"
        elif overall_delta <= 0:
            promote = False
            reason = (
                f"overall {metric} {chall_all[metric]:.5f} does not beat {CHAMPION} v{champ_version} "
                f"({champ_all[metric]:.5f})"
            )
        elif worst:
            promote = False
            reason = (
                f"overall {metric} improves by {overall_delta:+.5f} but domain(s) {worst} regress beyond "
                f"tolerance {tolerance} (deltas {[round(deltas[d], 5) for d in worst]})"
            )
        else:
            promote = True
            reason = (
                f"overall {metric} improves by {overall_delta:+.5f} over v{champ_version} and no domain regresses "
                f"by more than {tolerance}"
            )
    decision = GateDecision(
        promote=promote,
        reason=reason,
        metric=metric,
        tolerance=tolerance,
        version=version,
        champion_version=champ_version,
        challenger=chall_all,
        champion=champ_all,
        domain_deltas=deltas,
    )
    tags = {
        "decision": PROMOTE if promote else KEEP,
        "reason": reason,
        "metric": metric,
        "tolerance": repr(tolerance),
        "scored_on": f"validation ({len(validation.labels)} rows)"
        if validation is not None
        else "version tags",
        "champion_version": champ_version or "",
        f"challenger_{metric}": repr(chall_all.get(metric, float("nan"))),
        f"champion_{metric}": repr(champ_all.get(metric, float("nan"))),
        **{f"delta.domain.{d}": repr(v) for d, v in deltas.items()},
    }
    for k, v in tags.items():
        c.set_model_version_tag(name, version, GATE_TAG_PREFIX + k, v)
    log.info("gate for %s v%s: %s (%s)", name, version, tags["decision"], reason)
    return decision


def promote(
    tracking_uri: str | None, version: str | int, *, name: str, reason: str = "", action: str = ACTION_PROMOTE
) -> str:
    """Make ``version`` of registered model ``name`` its ``champion``; return the pinned URI
    ``models:/<name>/<version>``.

    The one function that moves ``champion``: the pipeline's promote step, ``mdctr models promote`` and
    ``rollback`` all end here. The change is appended to the champion history (``action`` = ``promote`` /
    ``force`` / ``rollback``, with ``reason``) and the version's model card is refreshed, both *before* the
    alias moves: the alias is the last write, so when anything fails the champion has not moved (a history
    entry whose alias move failed is removed again). Already champion → nothing is written.
    """
    c = get_client(tracking_uri)
    version = str(version)
    previous = _champion_version(c, name)
    uri = f"models:/{name}/{version}"
    if previous == version:
        log.info("%s v%s is already %s", name, version, CHAMPION)
        return uri
    if action not in HISTORY_ACTIONS:
        raise ValueError(f"champion history action {action!r}; expected one of {HISTORY_ACTIONS}")
    write_model_card(tracking_uri, version, name=name, champion=True)
    history = champion_history(tracking_uri, name=name)
    tag = _record(c, name, history, action=action, version=version, previous=previous, reason=reason)
    try:
        c.set_registered_model_alias(name, CHAMPION, version)  # last: nothing after it can fail the move
    except Exception:
        c.delete_registered_model_tag(name, tag)  # the move did not happen: neither does its history entry
        raise
    log.info("%s v%s is now %s (was %s): %s", name, version, CHAMPION, previous, reason or action)
    return uri


def alias_version(tracking_uri: str | None, alias: str, *, name: str) -> str | None:
    """The version of registered model ``name`` an alias points at, or None."""
    try:
        return str(get_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def model_storage_uri(
    tracking_uri: str | None, version: str | int, *, name: str, artifacts_destination: str | None = None
) -> str:
    """Where the files of version ``version`` of registered model ``name`` really are (for KServe's
    ``storageUri``).

    A server started with ``--serve-artifacts`` reports ``mlflow-artifacts:/<path>``, which only MLflow can
    read; with ``artifacts_destination`` (the server's ``--artifacts-destination``, e.g. ``s3://mdctr/mlflow``)
    it is mapped to the bucket location itself.
    """
    uri = get_client(tracking_uri).get_model_version_download_uri(name, str(version))
    if uri.startswith("mlflow-artifacts:"):
        if artifacts_destination is None:
            raise ValueError(
                f"{uri} is proxied by the tracking server; pass artifacts_destination to resolve it"
            )
        path = uri[len("mlflow-artifacts:") :].lstrip("/")
        return f"{artifacts_destination.rstrip('/')}/{path}"
    return uri


def load_input_example(tracking_uri: str | None, model_uri: str) -> pd.DataFrame:
    """The raw input example stored with a logged model (a few rows of ``schema.serving_columns``)."""

    configure(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mdctr-example-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri}/input_example.json", dst_path=tmp
        )
        d = json.loads(Path(path).read_text())
    return pd.DataFrame(d["data"], columns=d["columns"])


# -- listing, promotion with history, rollback (the ``mdctr models`` commands) ------------------------------
#: registered-model tags ``mdctr.champion_history.00001`` …: one JSON event per change of the champion alias
HISTORY_TAG_PREFIX = "mdctr.champion_history."
#: model-version tags written by a manual promotion or rollback
PROMOTION_TAG_PREFIX = "promotion."


@dataclass(frozen=True)
class VersionSummary:
    """One registered version as ``mdctr models list`` shows it.

    Attributes:
        version: version number (string, as MLflow returns it); ``aliases``: aliases pointing at it.
        created_ms: creation time (ms since the epoch); ``run_id``: the run that logged it.
        model / domain_source: the bundle's registry key and domain source (version tags).
        metrics: overall test metrics; ``domain_metrics``: per hand-crafted domain id (version tags).
        gate_decision / gate_reason: the promotion gate's last decision on it ("" when never gated).
        description: the version's description.
    """

    version: str
    aliases: tuple[str, ...]
    created_ms: int
    run_id: str
    model: str
    domain_source: str
    metrics: dict[str, float]
    domain_metrics: dict[int, dict[str, float]]
    gate_decision: str
    gate_reason: str
    description: str = ""


@dataclass(frozen=True)
class ChampionChange:
    """Outcome of a manual promotion or rollback.

    Attributes:
        changed: whether the ``champion`` alias moved; ``version``: the champion afterwards;
        previous: the champion before (None if there was none); ``reason``: why (gate reason or user reason);
        forced: the gate was overridden; ``gate``: the gate's decision (None for a rollback).
    """

    changed: bool
    version: str | None
    previous: str | None
    reason: str
    forced: bool = False
    gate: GateDecision | None = None


def _registered(c: mlflow.MlflowClient, name: str) -> Any:
    try:
        return c.get_registered_model(name)
    except MlflowException:
        return None


def _version_tags(tags: Mapping[str, str]) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    overall: dict[str, float] = {}
    domains: dict[int, dict[str, float]] = {}
    for k, v in tags.items():
        try:
            if k.startswith(METRIC_TAG_PREFIX):
                overall[k[len(METRIC_TAG_PREFIX) :]] = float(v)
            elif k.startswith(DOMAIN_TAG_PREFIX):
                d, _, name = k[len(DOMAIN_TAG_PREFIX) :].partition(".")
                domains.setdefault(int(d), {})[name] = float(v)
        except ValueError:
            continue  # a tag someone set by hand that is not a number: not a metric
    return overall, domains


def registered_models(tracking_uri: str | None) -> list[str]:
    """Names of the registered models mdctr made (``mdctr-<dataset>``), sorted."""
    c = get_client(tracking_uri)
    found = c.search_registered_models(filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'")
    return sorted(str(rm.name) for rm in found)


def list_versions(tracking_uri: str | None, *, name: str) -> list[VersionSummary]:
    """Every version of registered model ``name``, newest first, with aliases, metrics and gate decision.

    An empty list when nothing is registered under ``name`` yet.
    """
    c = get_client(tracking_uri)
    rm = _registered(c, name)
    if rm is None:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    out = []
    for mv in c.search_model_versions(f"name='{name}'"):
        tags = dict(mv.tags or {})
        overall, domains = _version_tags(tags)
        out.append(
            VersionSummary(
                version=str(mv.version),
                aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                created_ms=int(mv.creation_timestamp or 0),
                run_id=str(mv.run_id or ""),
                model=tags.get(TAG_BUNDLE_MODEL, ""),
                domain_source=tags.get(TAG_DOMAIN_SOURCE, ""),
                metrics=overall,
                domain_metrics=domains,
                gate_decision=tags.get(GATE_TAG_PREFIX + "decision", ""),
                gate_reason=tags.get(GATE_TAG_PREFIX + "reason", ""),
                description=mv.description or "",
            )
        )
    return sorted(out, key=lambda s: int(s.version), reverse=True)


def champion_history(tracking_uri: str | None, *, name: str) -> list[dict[str, Any]]:
    """Every change of the champion alias of registered model ``name`` (all go through :func:`promote`: the
    pipeline's promote step, ``mdctr models promote`` and ``rollback``), oldest first:
    ``{"seq", "action" (promote|force|rollback), "version", "previous", "reason", "at"}``."""
    rm = _registered(get_client(tracking_uri), name)
    if rm is None:
        return []
    events = []
    for k, v in (rm.tags or {}).items():
        if k.startswith(HISTORY_TAG_PREFIX):
            try:
                events.append({"seq": int(k[len(HISTORY_TAG_PREFIX) :]), **json.loads(v)})
            except ValueError:
                log.warning("ignoring unreadable champion history tag %s=%r", k, v)
    return sorted(events, key=lambda e: e["seq"])


def _record(c: mlflow.MlflowClient, name: str, history: list[dict[str, Any]], **event: Any) -> str:
    """Append ``event`` to the champion history; return the tag key written."""
    from datetime import UTC, datetime

    seq = (history[-1]["seq"] + 1) if history else 1
    event["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    key = f"{HISTORY_TAG_PREFIX}{seq:05d}"
    c.set_registered_model_tag(name, key, json.dumps(event))
    return key


def _require_version(c: mlflow.MlflowClient, name: str, version: str) -> None:
    try:
        c.get_model_version(name, version)
    except MlflowException:
        known = [str(mv.version) for mv in c.search_model_versions(f"name='{name}'")]
        raise RegistryError(
            f"{name} has no version {version!r}; registered versions: {sorted(known, key=int)}"
        ) from None


def promote_version(
    tracking_uri: str | None,
    version: str | int,
    *,
    name: str,
    force: bool = False,
    reason: str = "",
    tolerance: float = 0.002,
    metric: str = "auc",
) -> ChampionChange:
    """Run the promotion gate on ``version`` of registered model ``name`` and move ``champion`` to it if the
    gate says so — or regardless with ``force`` (then ``reason`` is required and recorded as the version's
    ``promotion.reason`` tag). The gate opens both versions through the safe loader
    (:func:`mdctr.tracking.loading.load_registered`), so an unsafe version is refused even with ``force``.

    The move goes through :func:`promote` (champion history, alias last), which :func:`rollback_champion`
    reads.
    """
    version = str(version)
    if force and not reason.strip():
        raise RegistryError("a forced promotion needs a reason (it is recorded on the version)")
    c = get_client(tracking_uri)
    _require_version(c, name, version)
    previous = _champion_version(c, name)
    if previous == version:
        return ChampionChange(False, version, previous, f"version {version} is already the {CHAMPION}", force)
    gate = decide_promotion(tracking_uri, version, name=name, tolerance=tolerance, metric=metric)
    if not gate.promote and not force:
        write_model_card(tracking_uri, version, name=name)  # with the refusal's reason
        return ChampionChange(False, previous, previous, gate.reason, False, gate)
    why = f"forced: {reason.strip()} (gate: {gate.reason})" if (force and not gate.promote) else gate.reason
    if force and gate.promote and reason.strip():
        why = f"{gate.reason}; {reason.strip()}"
    tags = {
        "forced": str(bool(force and not gate.promote)).lower(),
        "reason": why,
        "previous": previous or "",
    }
    for k, v in tags.items():
        c.set_model_version_tag(name, version, PROMOTION_TAG_PREFIX + k, v)
    action = ACTION_FORCE if force and not gate.promote else ACTION_PROMOTE
    promote(tracking_uri, version, name=name, reason=why, action=action)
    return ChampionChange(True, version, previous, why, action == ACTION_FORCE, gate)


def _previous_champion(history: list[dict[str, Any]], current: str) -> str | None:
    """The champion before ``current``: replay the history as a stack (promote pushes, rollback pops).

    Every move of the alias is in the history (:func:`promote` writes it); when ``current`` is not on top
    (an alias set by hand in the MLflow UI) the last champion the history knows is the one to return to.
    """
    stack: list[str] = []
    for e in history:
        if e.get("action") == ACTION_ROLLBACK:
            if stack:
                stack.pop()
            if e.get("version") and (not stack or stack[-1] != e["version"]):
                stack.append(str(e["version"]))
        else:
            prev = e.get("previous")
            if prev and (not stack or stack[-1] != str(prev)):
                stack.append(str(prev))
            stack.append(str(e["version"]))
    if stack and stack[-1] == current:
        return stack[-2] if len(stack) >= 2 else None
    return stack[-1] if stack and stack[-1] != current else None


def rollback_champion(tracking_uri: str | None, *, name: str, reason: str = "") -> ChampionChange:
    """Move ``champion`` of registered model ``name`` back to its previous champion (loaded through the safe
    loader first: an unsafe target is refused); the change is appended to the champion history and the
    demoted version gets a ``promotion.rolled_back`` tag."""
    c = get_client(tracking_uri)
    current = _champion_version(c, name)
    if current is None:
        raise RegistryError(f"{name} has no {CHAMPION} to roll back")
    target = _previous_champion(champion_history(tracking_uri, name=name), current)
    if target is None:
        raise RegistryError(
            f"{CHAMPION} v{current} has no previous {CHAMPION} to roll back to (it was the first)"
        )
    _require_version(c, name, target)
    load_registered(tracking_uri, name, target)  # it is about to be served: nothing executable in it
    why = reason.strip() or f"rolled back from v{current}"
    c.set_model_version_tag(name, current, PROMOTION_TAG_PREFIX + "rolled_back", why)
    write_model_card(tracking_uri, current, name=name, champion=False)
    promote(tracking_uri, target, name=name, reason=why, action=ACTION_ROLLBACK)
    return ChampionChange(True, target, current, why)


# -- model card ---------------------------------------------------------------------------------------------
#: model-version tag pointing at the version's model card (``runs:/<run>/model_card/v<version>.md``)
TAG_MODEL_CARD = "mdctr.model_card"
MODEL_CARD_DIR = "model_card"


def _domain_names(c: mlflow.MlflowClient, run_id: str) -> dict[int, str]:
    """Hand-crafted domain names from the training run's ``per_domain.json`` table ({} when it has none)."""
    import json

    with tempfile.TemporaryDirectory(prefix="mdctr-card-") as tmp:
        try:
            path = c.download_artifacts(run_id, "per_domain.json", tmp)
        except (MlflowException, OSError):
            return {}
        table = json.loads(Path(path).read_text())
    cols = table.get("columns") or []
    if "domain" not in cols or "name" not in cols:
        return {}
    i, j = cols.index("domain"), cols.index("name")
    return {int(row[i]): str(row[j]) for row in table.get("data") or []}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.5f}"
    return str(v)


def model_card(
    tracking_uri: str | None, version: str | int, *, name: str, champion: bool | None = None
) -> str:
    """A Markdown model card for a version of registered model ``name``: model, data version (DVC rev and md5
    from the pipeline's parent run), code version, FLOPs and dense parameters, overall and per-domain test
    metrics (with the domains' raw names), and the promotion gate's decision with its reason (plus any manual
    promotion or rollback). ``champion``: show the version as holding (True) or not holding (False) the
    ``champion`` alias whatever the registry says now — the card is written just before the alias moves."""
    from mdctr.tracking.names import TAG_DATA_MD5, TAG_DATA_REV, TAG_GIT_SHA

    c = get_client(tracking_uri)
    version = str(version)
    mv = c.get_model_version(name, version)
    tags = dict(mv.tags or {})
    overall, domains = _version_tags(tags)
    run = c.get_run(mv.run_id) if mv.run_id else None
    run_tags = dict(run.data.tags) if run else {}
    parent_tags: dict[str, str] = {}
    parent_id = run_tags.get("mlflow.parentRunId")
    if parent_id:
        try:
            parent_tags = dict(c.get_run(parent_id).data.tags)
        except MlflowException:
            parent_tags = {}

    def from_runs(key: str) -> str:
        return run_tags.get(key) or parent_tags.get(key) or "unknown"

    run_metrics = dict(run.data.metrics) if run else {}
    names = _domain_names(c, mv.run_id) if mv.run_id else {}
    rm = c.get_registered_model(name)
    held = {a for a, v in (rm.aliases or {}).items() if str(v) == version}
    if champion is not None:  # the card is written just before the alias moves (see :func:`promote`)
        held = held | {CHAMPION} if champion else held - {CHAMPION}
    aliases = sorted(held)
    lines = [
        f"# {name} version {version}",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{tags.get(TAG_BUNDLE_MODEL, 'unknown')}` (domain source `{tags.get(TAG_DOMAIN_SOURCE, '?')}`) |",
        f"| aliases | {', '.join(aliases) or 'none'} |",
        f"| training run | `{mv.run_id}` |",
        f"| data version | DVC rev `{from_runs(TAG_DATA_REV)}`, md5 `{from_runs(TAG_DATA_MD5)}` |",
        f"| code version | git `{from_runs(TAG_GIT_SHA)}` |",
        f"| forward FLOPs per sample | {_fmt(run_metrics['flops_per_sample']) if 'flops_per_sample' in run_metrics else 'unknown'} |",
        f"| dense parameters | {_fmt(run_metrics['dense_params']) if 'dense_params' in run_metrics else 'unknown'} |",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.5f} |" for k, v in sorted(overall.items())),
        "",
        "## Per hand-crafted domain (test)",
        "",
    ]
    metric_names = sorted({m for vals in domains.values() for m in vals})
    if domains:
        lines += [
            "| domain | name | " + " | ".join(metric_names) + " |",
            "|---|---|" + "---|" * len(metric_names),
            *(
                f"| {d} | {names.get(d, '')} | "
                + " | ".join(f"{vals[m]:.5f}" if m in vals else "" for m in metric_names)
                + " |"
                for d, vals in sorted(domains.items())
            ),
        ]
    else:
        lines.append("No per-domain metrics were stored with this version.")
    gate = {k[len(GATE_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(GATE_TAG_PREFIX)}
    lines += ["", "## Promotion gate", ""]
    if gate:
        champ = gate.get("champion_version") or "none"
        lines += [
            f"- decision: **{gate.get('decision', '?')}** — {gate.get('reason', '')}",
            f"- compared on `{gate.get('metric', '?')}` with champion v{champ} "
            f"(per-domain tolerance {gate.get('tolerance', '?')})",
        ]
    else:
        lines.append("The gate has not been run on this version.")
    manual = {
        k[len(PROMOTION_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(PROMOTION_TAG_PREFIX)
    }
    if manual:
        lines += ["", "## Manual changes", ""]
        if "reason" in manual:
            forced = " (gate overridden)" if manual.get("forced") == "true" else ""
            lines.append(f"- promoted{forced}: {manual['reason']}")
        if "rolled_back" in manual:
            lines.append(f"- rolled back: {manual['rolled_back']}")
    return "\n".join(lines) + "\n"


def write_model_card(
    tracking_uri: str | None, version: str | int, *, name: str, champion: bool | None = None
) -> str:
    """Log :func:`model_card` into the version's training run as ``model_card/v<version>.md`` (replacing an
    earlier card) and point the version tag ``mdctr.model_card`` at it; return that artifact URI."""
    c = get_client(tracking_uri)
    version = str(version)
    mv = c.get_model_version(name, version)
    artifact = f"{MODEL_CARD_DIR}/v{version}.md"
    c.log_text(mv.run_id, model_card(tracking_uri, version, name=name, champion=champion), artifact)
    uri = f"runs:/{mv.run_id}/{artifact}"
    c.set_model_version_tag(name, version, TAG_MODEL_CARD, uri)
    log.info("model card for %s v%s: %s", name, version, uri)
    return uri
