"""Model registry: log a bundle as a pyfunc and register it (alias ``challenger``), the promotion gate, and
promotion (alias ``champion``).

The gate reads the test metrics stored as model-version tags at registration (``metric.<name>`` overall,
``domain.<id>.<name>`` per hand-crafted domain), so it compares any two versions without opening their runs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

import mdctr
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
) -> RegisteredVersion:
    """Log ``bundle_dir`` as a pyfunc model in run ``run_id``, register it as ``mdctr-ctr``, store its test
    metrics as version tags and point alias ``challenger`` at it.

    The pyfunc is loaded by the installed module ``mdctr.tracking.pyfunc`` (``loader_module``) from the bundle
    stored as the model's ``data/bundle``: weights and JSON only, no pickled Python object and no code folder.
    No signature is logged on purpose: MLflow's signature enforcement casts request values before ``predict``
    sees them (``"5"`` or ``1.9`` → ``5`` for an integer id), hiding client bugs that mdctr's own strict
    checks answer with a 400. The input example (raw serving columns) still documents the request format.
    """
    uri = configure(tracking_uri)
    bundle_dir = Path(bundle_dir).resolve()
    predictor = Predictor.load(bundle_dir)
    example = input_example[list(predictor.columns)].head(5).reset_index(drop=True)
    predictor.predict(example)  # fail here, not in serving, if the example does not score
    metrics = read_metrics(bundle_dir)
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


def decide_promotion(
    tracking_uri: str | None, version: str | int, *, tolerance: float = 0.002, metric: str = "auc"
) -> GateDecision:
    """Should ``version`` replace the champion? Writes the decision and its numbers as ``gate.*`` version tags.

    Rules: no champion yet → promote. Otherwise promote only if the challenger is strictly better than the
    champion on ``metric`` overall AND on no hand-crafted domain the champion was measured on is it worse by
    more than ``tolerance`` (a domain missing from the challenger counts as a regression).
    """
    c = get_client(tracking_uri)
    version = str(version)
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    chall_all, chall_dom = version_metrics(tracking_uri, version)
    champ_version = _champion_version(c)
    champ_all: dict[str, float] = {}
    deltas: dict[int, float] = {}
    if metric not in chall_all:
        promote, reason = False, f"version {version} has no overall test {metric!r} to compare"
    elif champ_version is None:
        promote, reason = True, f"no {CHAMPION} yet; version {version} becomes the first"
    elif champ_version == version:
        promote, reason = False, f"version {version} is already the {CHAMPION}"
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
    import json

    configure(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mdctr-example-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri}/input_example.json", dst_path=tmp
        )
        d = json.loads(Path(path).read_text())
    return pd.DataFrame(d["data"], columns=d["columns"])
