"""Registration: log a bundle as a pyfunc, register it under its dataset's model (alias ``challenger``), tag
its test metrics and feature schema; and read back what registration wrote (versions, metrics, storage).

Every dataset registers under its own model (``mdctr-<schema name>``, :func:`mdctr.tracking.names.
registered_model_name`); every function here takes that registered model's ``name``, so a version of one dataset
is never gated against, or replaces, the champion of another.

The gate (:mod:`mdctr.tracking.gate`) reads the test metrics stored here as model-version tags
(``metric.<name>`` overall, ``domain.<id>.<name>`` per hand-crafted domain), so it compares any two versions
without opening their runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

import mdctr
from mdctr.schema import FeatureSchema
from mdctr.tracking.names import (
    CHALLENGER,
    DOMAIN_TAG_PREFIX,
    GATE_TAG_PREFIX,
    METRIC_TAG_PREFIX,
    MODEL_NAME_IN_RUN,
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

if TYPE_CHECKING:  # the bundle brings torch and the model zoo: imported only where a bundle is loaded
    from mdctr.serving.bundle import Predictor

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


def _schema_tags(schema: FeatureSchema) -> dict[str, str]:
    return {TAG_SCHEMA: schema.name, TAG_SCHEMA_HASH: schema_fingerprint(schema)}


def tag_schema(tracking_uri: str | None, version: str | int, schema: FeatureSchema, *, name: str) -> None:
    """Record on a version of registered model ``name`` which dataset (schema name) and feature schema it was
    trained on (:func:`register_bundle` does this for the bundle's own schema)."""
    c = get_client(tracking_uri)
    for k, v in _schema_tags(schema).items():
        c.set_model_version_tag(name, str(version), k, v)


def register_bundle(
    tracking_uri: str | None,
    bundle_dir: Path | str,
    *,
    run_id: str,
    input_example: pd.DataFrame,
    predictor: Predictor | None = None,
    alias: str = CHALLENGER,
    name: str | None = None,
) -> RegisteredVersion:
    """Log ``bundle_dir`` as a pyfunc model in run ``run_id``, register it under ``name`` (default: its
    dataset's model, ``mdctr-<schema name>``), store its test metrics, its dataset and feature schema
    (``mdctr.schema``/``mdctr.schema_hash``, which the gate compares) as version tags and point alias
    ``challenger`` at it.

    ``predictor``: the bundle already loaded by the caller (``Predictor.load(bundle_dir)``), so the bundle is
    loaded once; loaded here when None.

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
    predictor = predictor if predictor is not None else Predictor.load(bundle_dir)
    example = input_example[list(predictor.required_columns)].head(5).reset_index(drop=True)
    predictor.predict(example)  # fail here, not in serving, if the example does not score
    schema = predictor.spec.schema
    name = name or registered_model_name(schema.name)
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
        **_metric_tags(read_metrics(bundle_dir)),
        **_schema_tags(schema),
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


# -- reading back what registration wrote ------------------------------------------------------------------
def metric_tags(tags: Mapping[str, str]) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per hand-crafted domain id) metrics from a version's tags (``metric.*``, ``domain.<id>.*``);
    a tag that does not parse as a number (set by hand) is not a metric and is skipped."""
    overall: dict[str, float] = {}
    domains: dict[int, dict[str, float]] = {}
    for k, v in tags.items():
        try:
            if k.startswith(METRIC_TAG_PREFIX):
                overall[k[len(METRIC_TAG_PREFIX) :]] = float(v)
            elif k.startswith(DOMAIN_TAG_PREFIX):
                d, _, metric = k[len(DOMAIN_TAG_PREFIX) :].partition(".")
                domains.setdefault(int(d), {})[metric] = float(v)
        except ValueError:
            continue
    return overall, domains


def version_metrics(
    tracking_uri: str | None, version: str | int, *, name: str
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per-domain) test metrics stored on a version's tags of registered model ``name``."""
    return metric_tags(get_client(tracking_uri).get_model_version(name, str(version)).tags)


def alias_version(tracking_uri: str | None, alias: str, *, name: str) -> str | None:
    """The version of registered model ``name`` an alias points at, or None (no such alias or model)."""
    try:
        return str(get_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def require_version(tracking_uri: str | None, version: str | int, *, name: str) -> str:
    """``version`` as a string when registered model ``name`` has it; else a :class:`RegistryError` naming the
    versions it has."""
    from mdctr.tracking.loading import RegistryError

    c = get_client(tracking_uri)
    try:
        c.get_model_version(name, str(version))
    except MlflowException:
        known = [str(mv.version) for mv in c.search_model_versions(f"name='{name}'")]
        raise RegistryError(
            f"{name} has no version {str(version)!r}; registered versions: {sorted(known, key=int)}"
        ) from None
    return str(version)


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


def registered_models(tracking_uri: str | None) -> list[str]:
    """Names of the registered models mdctr made (``mdctr-<dataset>``), sorted."""
    c = get_client(tracking_uri)
    found = c.search_registered_models(filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'")
    return sorted(str(rm.name) for rm in found)


def registered_model(tracking_uri: str | None, name: str) -> Any:
    """MLflow's ``RegisteredModel`` ``name`` (aliases, tags), or None when nothing is registered under it."""
    try:
        return get_client(tracking_uri).get_registered_model(name)
    except MlflowException:
        return None


def list_versions(tracking_uri: str | None, *, name: str) -> list[VersionSummary]:
    """Every version of registered model ``name``, newest first, with aliases, metrics and gate decision.

    An empty list when nothing is registered under ``name`` yet.
    """
    rm = registered_model(tracking_uri, name)
    if rm is None:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    out = []
    for mv in get_client(tracking_uri).search_model_versions(f"name='{name}'"):
        tags = dict(mv.tags or {})
        overall, domains = metric_tags(tags)
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
