"""The KServe ``InferenceService`` for the champion model (a plain dict; written as YAML).

KServe's MLflow model format: the storage initializer downloads ``storageUri`` (the registered model
version's artifact location, resolved by :func:`mdctr.tracking.model_storage_uri`) into ``/mnt/models`` and
the serving runtime loads it as an MLflow pyfunc. ``image`` overrides the runtime's container image with the
project's serve image (it carries ``mdctr`` and the pinned inference dependencies), so the served code is the
code the model was trained with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import mdctr

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODEL_FORMAT = "mlflow"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}
# Kubernetes object names: DNS-1035 labels (lowercase alphanumerics and '-', starting with a letter).
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def kserve_manifest(
    *,
    name: str,
    storage_uri: str,
    image: str = mdctr.IMAGE,
    namespace: str | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    protocol_version: str = "v2",
    args: Sequence[str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An ``InferenceService`` serving the MLflow model at ``storage_uri`` (``s3://…`` or another URI KServe's
    storage initializer reads; not ``models:/`` or ``mlflow-artifacts:/``, which only MLflow resolves).

    ``resources``: container requests/limits (default :data:`DEFAULT_RESOURCES`). ``args`` replaces the
    runtime's container arguments when the image needs its own entrypoint. ``annotations`` go on metadata
    (e.g. the registered model version and the gate decision, for traceability).
    """
    if not _NAME.match(name):
        raise ValueError(
            f"InferenceService name {name!r} is not a valid Kubernetes name (lowercase, '-', ≤63)"
        )
    if storage_uri.startswith(("models:/", "runs:/", "mlflow-artifacts:")):
        raise ValueError(
            f"storage_uri {storage_uri!r} is an MLflow URI; resolve it to the artifact store first"
        )
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "protocolVersion": protocol_version,
        "storageUri": storage_uri,
        "image": image,
        "resources": {k: dict(v) for k, v in (resources or DEFAULT_RESOURCES).items()},
    }
    if args is not None:
        model["args"] = list(args)
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"predictor": {"model": model}},
    }


def write_manifest(path: Path | str, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` as YAML (block style, keys in insertion order) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False))
    return path
