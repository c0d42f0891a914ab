"""Model registry: log a bundle as a pyfunc and register it (alias ``challenger``), the promotion gate, and
promotion (alias ``champion``).

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
import warnings
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
from mlflow.models import infer_signature

import mdctr
from mdctr.schema import FeatureSchema
from mdctr.serving.bundle import Predictor, read_metrics
from mdctr.tracking.names import (
    CHALLENGER,
    CHAMPION,
    DOMAIN_TAG_PREFIX,
    GATE_TAG_PREFIX,
    HIGHER_IS_BETTER,
    METRIC_TAG_PREFIX,
    MODEL_NAME_IN_RUN,
    REGISTERED_MODEL,
    TAG_BUNDLE_MODEL,
    TAG_DOMAIN_SOURCE,
    TAG_SCHEMA,
    TAG_SCHEMA_HASH,
)
from mdctr.tracking.pyfunc import BUNDLE_ARTIFACT, MdctrPyfunc
from mdctr.tracking.setup import client as get_client
from mdctr.tracking.setup import configure

log = logging.getLogger(__name__)

#: distributions inference imports (the pyfunc, the bundle and the models); pinned from requirements.lock
INFERENCE_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pyyaml", "cloudpickle")


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


# -- requirements and code --------------------------------------------------------------------------------
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


def _package_copy(dest: Path) -> Path:
    """A clean copy of the ``mdctr`` source package (no caches) to ship with the model as ``code_paths``."""
    src = Path(mdctr.__file__).resolve().parent
    target = dest / "mdctr"
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


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
) -> RegisteredVersion:
    """Log ``bundle_dir`` as a pyfunc model in run ``run_id``, register it as ``mdctr-ctr``, store its test
    metrics as version tags and point alias ``challenger`` at it.

    The signature is inferred from ``input_example`` (raw serving columns) → pCTR, so MLflow's server rejects
    requests with missing columns or uncastable types before the model runs. The model carries a copy of the
    ``mdctr`` package (``code_paths``) and exact pins of the inference dependencies.
    """
    uri = configure(tracking_uri)
    bundle_dir = Path(bundle_dir).resolve()
    predictor = Predictor.load(bundle_dir)
    example = input_example[list(predictor.columns)].head(5).reset_index(drop=True)
    with warnings.catch_warnings():
        # MLflow warns that integer columns cannot hold missing values: ids must never be missing here
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, predictor.predict(example))
    metrics = read_metrics(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="mdctr-code-") as code_dir, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=MdctrPyfunc(),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            code_paths=[str(_package_copy(Path(code_dir)))],
            signature=signature,
            input_example=example,
            pip_requirements=inference_requirements(),
        )
    c = mlflow.MlflowClient(uri, registry_uri=uri)
    mv = mlflow.register_model(info.model_uri, REGISTERED_MODEL)
    tags = {
        **_metric_tags(metrics),
        TAG_BUNDLE_MODEL: predictor.info.model_name,
        TAG_DOMAIN_SOURCE: predictor.info.domain_source,
    }
    for k, v in tags.items():
        c.set_model_version_tag(REGISTERED_MODEL, mv.version, k, v)
    c.set_registered_model_alias(REGISTERED_MODEL, alias, mv.version)
    log.info("registered %s version %s (alias %s) from run %s", REGISTERED_MODEL, mv.version, alias, run_id)
    return RegisteredVersion(REGISTERED_MODEL, str(mv.version), f"models:/{REGISTERED_MODEL}/{mv.version}")


def version_metrics(
    tracking_uri: str | None, version: str | int
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per-domain) test metrics stored on a model version's tags."""
    mv = get_client(tracking_uri).get_model_version(REGISTERED_MODEL, str(version))
    overall: dict[str, float] = {}
    domains: dict[int, dict[str, float]] = {}
    for k, v in mv.tags.items():
        if k.startswith(METRIC_TAG_PREFIX):
            overall[k[len(METRIC_TAG_PREFIX) :]] = float(v)
        elif k.startswith(DOMAIN_TAG_PREFIX):
            d, _, name = k[len(DOMAIN_TAG_PREFIX) :].partition(".")
            domains.setdefault(int(d), {})[name] = float(v)
    return overall, domains


def _champion_version(c: mlflow.MlflowClient) -> str | None:
    try:
        return str(c.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION).version)
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


def tag_schema(tracking_uri: str | None, version: str | int, schema: FeatureSchema) -> None:
    """Record on a model version which dataset (schema name) and feature schema it was trained on."""
    c = get_client(tracking_uri)
    c.set_model_version_tag(REGISTERED_MODEL, str(version), TAG_SCHEMA, schema.name)
    c.set_model_version_tag(REGISTERED_MODEL, str(version), TAG_SCHEMA_HASH, schema_fingerprint(schema))


@dataclass(frozen=True)
class ValidationSet:
    """The current validation split as served: raw rows (``schema.serving_columns``), labels and hand-crafted
    domain ids, and the schema it belongs to. The gate scores champion and challenger on exactly these rows."""

    frame: pd.DataFrame
    labels: np.ndarray
    domains: np.ndarray
    schema: FeatureSchema


def _score(
    tracking_uri: str | None, version: str, validation: ValidationSet, metric: str
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per hand-crafted domain) ``metric`` of a registered version on ``validation``, predicted by
    the registered pyfunc itself (the served path)."""
    from sklearn.metrics import log_loss, roc_auc_score

    if metric not in ("auc", "logloss"):
        raise ValueError(f"the gate re-scores 'auc' or 'logloss' on validation, not {metric!r}")
    configure(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/{version}")
    probs = np.asarray(model.predict(_as_signature(validation.frame, model)), dtype=np.float64)
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


def _as_signature(frame: pd.DataFrame, model: Any) -> pd.DataFrame:
    """``frame`` with each column cast to the registered signature's type (decoded dense values are float64;
    a signature inferred from raw rows may say float32 or, for integer-valued features, int64)."""
    schema = model.metadata.get_input_schema()
    if schema is None:
        return frame
    out = frame.copy()
    for col in schema.inputs:
        if col.name not in out.columns:
            continue
        dtype = np.dtype(col.type.to_numpy())
        if dtype.kind in "iu" and out[col.name].dtype.kind == "f":
            out[col.name] = np.round(out[col.name])
        out[col.name] = out[col.name].astype(dtype)
    return out


def _schema_mismatch(c: mlflow.MlflowClient, challenger: str, champion: str) -> str | None:
    """Why two versions must not be compared (different dataset or feature schema), or None."""
    tags = [c.get_model_version(REGISTERED_MODEL, v).tags for v in (challenger, champion)]
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
    tolerance: float = 0.002,
    metric: str = "auc",
    validation: ValidationSet | None = None,
) -> GateDecision:
    """Should ``version`` replace the champion? Writes the decision and its numbers as ``gate.*`` version tags.

    Rules: no champion yet → promote. A champion of another dataset or feature schema (version tags
    ``mdctr.schema``/``mdctr.schema_hash``, see :func:`tag_schema`) is never compared: the challenger is kept.
    Otherwise promote only if the challenger is strictly better than the champion on ``metric`` overall AND on
    no hand-crafted domain the champion was measured on is it worse by more than ``tolerance`` (a domain
    missing from the challenger counts as a regression).

    With ``validation`` (the current validation split, raw rows) both versions are re-scored on those same
    rows through their registered pyfuncs, so the comparison is on validation data of this run, never on
    stale tags; without it the metrics stored on the version tags are compared (the old behaviour).
    """
    c = get_client(tracking_uri)
    version = str(version)
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    champ_version = _champion_version(c)
    mismatch = _schema_mismatch(c, version, champ_version) if champ_version not in (None, version) else None
    if validation is not None:
        chall_all, chall_dom = _score(tracking_uri, version, validation, metric)
    else:
        chall_all, chall_dom = version_metrics(tracking_uri, version)
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
        if validation is not None:
            champ_all, champ_dom = _score(tracking_uri, champ_version, validation, metric)
        else:
            champ_all, champ_dom = version_metrics(tracking_uri, champ_version)
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
        "decision": "promote" if promote else "reject",
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
        c.set_model_version_tag(REGISTERED_MODEL, version, GATE_TAG_PREFIX + k, v)
    log.info("gate for %s v%s: %s (%s)", REGISTERED_MODEL, version, tags["decision"], reason)
    return decision


def promote(tracking_uri: str | None, version: str | int) -> str:
    """Move alias ``champion`` to ``version``; return the pinned URI ``models:/mdctr-ctr/<version>``."""
    c = get_client(tracking_uri)
    c.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, str(version))
    log.info("%s v%s is now %s", REGISTERED_MODEL, version, CHAMPION)
    return f"models:/{REGISTERED_MODEL}/{version}"


def alias_version(tracking_uri: str | None, alias: str) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(get_client(tracking_uri).get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except MlflowException:
        return None


def model_storage_uri(
    tracking_uri: str | None, version: str | int, *, artifacts_destination: str | None = None
) -> str:
    """Where the version's files really are (for KServe's ``storageUri``).

    A server started with ``--serve-artifacts`` reports ``mlflow-artifacts:/<path>``, which only MLflow can
    read; with ``artifacts_destination`` (the server's ``--artifacts-destination``, e.g. ``s3://mdctr/mlflow``)
    it is mapped to the bucket location itself.
    """
    uri = get_client(tracking_uri).get_model_version_download_uri(REGISTERED_MODEL, str(version))
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
