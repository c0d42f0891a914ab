"""The KServe ``InferenceService`` for the champion model: a custom predictor running the project's serve image.

KServe custom-predictor contract (KServe's ``CustomPredictor``): the container named ``kserve-container``
with an environment variable ``STORAGE_URI`` gets the storage initializer, which downloads that URI (the
registered model version's artifact location, :func:`mdctr.tracking.model_storage_uri`) into
``/mnt/models`` before the container starts; the pod's ``serviceAccountName`` carries the S3 credentials
(a secret with KServe's ``serving.kserve.io/s3-*`` annotations). The container is the ``serve`` image target,
whose command is ``mdctr serve --model-uri "$MODEL_URI" --host 0.0.0.0 --port "$PORT"``: the production
server (:mod:`mdctr.serving.app`), which speaks the Open Inference Protocol v2 on
``/v2/models/<name>/infer`` (``<name>`` = the InferenceService name) and reads only weights and JSON from
``/mnt/models``. Probes use the v2 health routes, with timeouts that the measured ``/live`` latency
under 10k-row load fits (:data:`MEASURED_LIVE_UNDER_LOAD_S`).

**Canary rollout** (KServe v1beta1, serverless mode): an ``InferenceService`` spec holds ONE predictor, the
model that is rolling out. With ``spec.predictor.canaryTrafficPercent: P`` KServe creates a new revision for
that spec and sends it P% of the traffic, while the last revision rolled out at 100% (the champion's, from the
manifest applied before) keeps the other 100 − P%. So a canary manifest (:func:`kserve_manifest` with
``canary_traffic_percent``) carries the *canary's* storage URI and the percent; the champion is not in the spec
but in KServe's previous revision (the manifest's ``mdctr/champion-*`` annotations name it). Finishing the canary
is the same spec without ``canaryTrafficPercent`` (the new revision takes 100%); rolling it back is the
champion's own manifest again (its storage URI, no ``canaryTrafficPercent``).

The manifest is checked against KServe's own API types in ``tests/serving/test_kserve.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import mdctr
from mdctr.io import write_text_atomic

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
CONTAINER_NAME = "kserve-container"  # the name KServe's webhook looks for (storage initializer, probes)
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
PORT = 8080  # KServe routes traffic to the container's first port
DEFAULT_SERVICE_ACCOUNT = "mdctr-serving"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "1", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
#: the slowest ``/v2/health/live`` answer measured while 10,000-row requests kept the worker busy: 1.7 s in the
#: issue-22 probe (ML-1M champion), 0.80 s for 4 clients of 10k-row requests on the demo dnn [256, 128]
#: (docs/benchmarks/serving.md, ``benchmarks/serving_attacks.py``). A prediction runs on the event loop, so a
#: probe waits for the requests ahead of it; Kubernetes' default probe timeout of 1 s does not fit that.
MEASURED_LIVE_UNDER_LOAD_S = 1.7
#: readiness: 3× the measured worst case; failing it takes the pod out of the Service (sheds load), no restart
READINESS_TIMEOUT_S = 5
#: liveness: failing it restarts the container, so a busy but healthy server must never fail it: 6× the worst case
LIVENESS_TIMEOUT_S = 10
# Kubernetes object names: DNS-1035 labels (lowercase alphanumerics and '-', starting with a letter).
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def serve_image() -> str:
    """The serve image reference (the ``serve`` target of the Dockerfile), immutable per commit."""
    return mdctr.image_ref("serve")


def _request_log_env(uri: str | None, sample: float) -> list[dict[str, str]]:
    """The container settings that turn on ``mdctr serve``'s request log (its ``--log`` flags' env vars)."""
    if not uri:
        return []
    from mdctr.serving.requestlog import LOG_ENV_PREFIX, RequestLogSettings

    settings = RequestLogSettings(uri=uri, sample=float(sample))  # refuses a bad rate here, not in the pod
    return [
        {"name": LOG_ENV_PREFIX, "value": settings.uri},
        {"name": f"{LOG_ENV_PREFIX}_SAMPLE", "value": repr(settings.sample)},
    ]


def kserve_manifest(
    *,
    name: str,
    storage_uri: str,
    image: str | None = None,
    namespace: str | None = None,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    workers: int = 1,
    annotations: Mapping[str, str] | None = None,
    canary_traffic_percent: int | None = None,
    request_log: str | None = None,
    request_log_sample: float = 1.0,
) -> dict[str, Any]:
    """An ``InferenceService`` serving the MLflow model at ``storage_uri`` (``s3://…`` or another URI KServe's
    storage initializer reads; not ``models:/`` or ``mlflow-artifacts:/``, which only MLflow resolves).

    ``service_account``: the Kubernetes service account whose secret grants read access to ``storage_uri``.
    ``resources``: container requests/limits (default :data:`DEFAULT_RESOURCES`). ``workers``: server worker
    processes. ``annotations`` go on metadata (e.g. the registered model version, for traceability).
    ``canary_traffic_percent``: serve ``storage_uri`` as a canary with that share (0–100) of the traffic, the
    previously rolled-out revision keeping the rest (see the module docstring); None: it takes all traffic.
    ``request_log``: the served-request log's destination (``s3://BUCKET/PREFIX``; ``mdctr serve --log``, set in
    the container as ``MDCTR_SERVE_LOG`` with ``MDCTR_SERVE_LOG_SAMPLE`` = ``request_log_sample``); None: off.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"InferenceService name {name!r} is not a valid Kubernetes name (lowercase, '-', ≤63)"
        )
    if storage_uri.startswith(("models:/", "runs:/", "mlflow-artifacts:")):
        raise ValueError(
            f"storage_uri {storage_uri!r} is an MLflow URI; resolve it to the artifact store first"
        )
    if not _NAME.match(service_account):
        raise ValueError(f"service account {service_account!r} is not a valid Kubernetes name")
    if canary_traffic_percent is not None and (
        isinstance(canary_traffic_percent, bool)
        or not isinstance(canary_traffic_percent, int)
        or not 0 <= canary_traffic_percent <= 100
    ):
        raise ValueError(
            f"canaryTrafficPercent must be an integer from 0 to 100, not {canary_traffic_percent!r}"
        )
    probe = {
        "httpGet": {"path": "/v2/health/ready", "port": PORT},
        "periodSeconds": 10,
        "timeoutSeconds": READINESS_TIMEOUT_S,
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image or serve_image(),
        "env": [
            {"name": "STORAGE_URI", "value": storage_uri},
            {"name": "MODEL_URI", "value": MODEL_MOUNT},
            {"name": "PORT", "value": str(PORT)},
            {"name": "MDCTR_MODEL_NAME", "value": name},
            {"name": "MDCTR_SERVE_WORKERS", "value": str(workers)},
            *_request_log_env(request_log, request_log_sample),
        ],
        "ports": [{"containerPort": PORT, "name": "http1", "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": PORT},
            "periodSeconds": 10,
            "timeoutSeconds": LIVENESS_TIMEOUT_S,
        },
        "resources": {k: dict(v) for k, v in (resources or DEFAULT_RESOURCES).items()},
    }
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    predictor: dict[str, Any] = {"serviceAccountName": service_account}
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    predictor["containers"] = [container]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {"predictor": predictor}}


def write_manifest(path: Path | str, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` as YAML (block style, keys in insertion order) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a reader (kubectl apply, a GitOps sync) never sees half a manifest
    write_text_atomic(path, yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False))
    return path
