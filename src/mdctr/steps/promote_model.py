"""Step: make a registered version the ``champion`` and write its KServe InferenceService manifest."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mdctr.steps.common import tracking_uri_or_none

log = logging.getLogger(__name__)

#: the tracking server's ``--artifacts-destination`` (e.g. ``s3://mdctr/mlflow``), needed to turn a proxied
#: ``mlflow-artifacts:/`` location into a URI KServe's storage initializer can read
ARTIFACTS_DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"


@dataclass(frozen=True)
class PromoteConfig:
    """Attributes: the registered model's ``name`` (``mdctr-<dataset>``, :func:`mdctr.tracking.
    registered_model_name`) and the ``version`` to promote, MLflow URI, the serving ``namespace`` (``""``: none
    in the manifest), the artifacts destination (``""``: ``$MLFLOW_ARTIFACTS_DESTINATION``) and the gate's
    ``reason`` (recorded in the champion history). The InferenceService is named after the registered model,
    so each dataset's champion has its own service."""

    name: str
    version: str
    tracking_uri: str = ""
    namespace: str = ""
    artifacts_destination: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PromoteOutput:
    """Attributes: pinned ``model_uri`` of the new champion, the InferenceService name, the manifest path
    and the ``storage_uri`` it serves from."""

    model_uri: str
    service_name: str
    manifest_path: Path
    storage_uri: str


def promote_model(*, manifest_path: Path | str, config: PromoteConfig) -> PromoteOutput:
    """Write the InferenceService YAML for ``config.version`` of ``config.name`` to ``manifest_path``, then
    make that version the ``champion``.

    Atomic for the champion: everything that can fail (resolving the storage URI, writing the manifest, the
    model card) happens first and the alias moves last, through :func:`mdctr.tracking.promote`, which also
    appends the move to the champion history (``mdctr models list`` shows it, ``rollback`` undoes it). When
    this step fails the champion has not moved, and the exit handler marks the parent run FAILED.
    """
    from mdctr import tracking
    from mdctr.serving.kserve import kserve_manifest, write_manifest

    uri = tracking_uri_or_none(config.tracking_uri)
    name = config.name
    model_uri = f"models:/{name}/{config.version}"
    storage = tracking.model_storage_uri(
        uri,
        config.version,
        name=name,
        artifacts_destination=config.artifacts_destination
        or os.environ.get(ARTIFACTS_DESTINATION_ENV)
        or None,
    )
    manifest = kserve_manifest(
        name=name,
        storage_uri=storage,
        namespace=config.namespace or None,
        annotations={"mdctr/model-uri": model_uri, "mdctr/model-version": config.version},
    )
    path = write_manifest(manifest_path, manifest)
    tracking.promote(uri, config.version, name=name, reason=config.reason or "gate: promote")
    log.info(
        "promoted %s to %s; KServe manifest %s (storage %s)", model_uri, tracking.CHAMPION, path, storage
    )
    return PromoteOutput(model_uri=model_uri, service_name=name, manifest_path=path, storage_uri=storage)
