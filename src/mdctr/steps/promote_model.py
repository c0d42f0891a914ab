"""Step: make a registered version the ``champion`` and write its KServe InferenceService manifest; and the
manifest of any rollout (champion alone, or champion + canary), which ``mdctr models promote|rollback`` write
through :func:`write_rollout_manifest`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdctr.steps.common import tracking_uri_or_none

if TYPE_CHECKING:
    from mdctr.tracking.champion import Rollout

log = logging.getLogger(__name__)

#: the tracking server's ``--artifacts-destination`` (e.g. ``s3://mdctr/mlflow``), needed to turn a proxied
#: ``mlflow-artifacts:/`` location into a URI KServe's storage initializer can read
ARTIFACTS_DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"
#: where the served model logs its requests (``s3://BUCKET/PREFIX``) and the sampled share, written into every
#: rollout manifest so the pods log (``mdctr serve --log``); unset: no request log
REQUEST_LOG_ENV = "MDCTR_REQUEST_LOG"
REQUEST_LOG_SAMPLE_ENV = "MDCTR_REQUEST_LOG_SAMPLE"


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
    canary_percent: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.canary_percent, bool) or not 0 <= int(self.canary_percent) <= 99:
            raise ValueError(
                f"canary_percent must be 0 (champion at once) or 1-99, not {self.canary_percent!r}"
            )


@dataclass(frozen=True)
class PromoteOutput:
    """Attributes: pinned ``model_uri`` of the new champion, the InferenceService name, the manifest path
    and the ``storage_uri`` it serves from."""

    model_uri: str
    service_name: str
    manifest_path: Path
    storage_uri: str
    alias: str = "champion"


def write_rollout_manifest(
    manifest_path: Path | str,
    rollout: Rollout,
    *,
    name: str,
    tracking_uri: str | None,
    namespace: str = "",
    artifacts_destination: str = "",
) -> tuple[Path, str]:
    """Write the InferenceService that serves ``rollout`` of registered model ``name``; return (path, the
    storage URI in its spec).

    Champion alone: the champion's storage URI takes all traffic. With a canary (KServe v1beta1 canary
    semantics, :mod:`mdctr.serving.kserve`): the spec holds the *canary's* storage URI with
    ``canaryTrafficPercent`` = its percent, and KServe's last rolled-out revision (the champion's) keeps the
    rest; annotations name both versions and the champion's storage URI. Resolving a storage URI is the step
    that can fail (a proxied ``mlflow-artifacts:/`` location without ``artifacts_destination``), so callers
    write this before moving any alias. With ``$MDCTR_REQUEST_LOG`` set (and ``$MDCTR_REQUEST_LOG_SAMPLE``,
    default 1.0) the served container logs its requests there.
    """
    from mdctr import tracking
    from mdctr.serving.kserve import kserve_manifest, write_manifest

    destination = artifacts_destination or os.environ.get(ARTIFACTS_DESTINATION_ENV) or None

    def storage(version: str) -> str:
        return tracking.model_storage_uri(tracking_uri, version, name=name, artifacts_destination=destination)

    served = rollout.canary or rollout.champion
    annotations = {
        "mdctr/model-uri": f"models:/{name}/{served}",
        "mdctr/model-version": served,
        "mdctr/champion-version": rollout.champion,
    }
    champion_storage = storage(rollout.champion)
    if rollout.canary is not None:
        annotations |= {
            "mdctr/canary-version": rollout.canary,
            "mdctr/champion-storage-uri": champion_storage,
        }
    spec_storage = storage(rollout.canary) if rollout.canary is not None else champion_storage
    manifest = kserve_manifest(
        name=name,
        storage_uri=spec_storage,
        namespace=namespace or None,
        annotations=annotations,
        canary_traffic_percent=rollout.percent if rollout.canary is not None else None,
        request_log=os.environ.get(REQUEST_LOG_ENV) or None,
        request_log_sample=float(os.environ.get(REQUEST_LOG_SAMPLE_ENV) or 1.0),
    )
    return write_manifest(manifest_path, manifest), spec_storage


def promote_model(*, manifest_path: Path | str, config: PromoteConfig) -> PromoteOutput:
    """Write the InferenceService YAML for ``config.version`` of ``config.name`` to ``manifest_path``, then
    make that version the ``champion`` — or, with ``config.canary_percent`` > 0 and a champion in place, the
    ``canary`` with that share of traffic beside it (``mdctr models promote --finish`` completes the rollout,
    ``mdctr models rollback`` removes it). The first version of a model has no champion to share traffic with
    and becomes champion.

    Atomic: everything that can fail (resolving the storage URIs, writing the manifest, the model card)
    happens first and the alias moves last, with a history entry (``mdctr models list`` shows it). A promotion
    to champion ends a running canary (the manifest serves the new champion alone). When this step fails no
    alias has moved, and the exit handler marks the parent run FAILED.
    """
    from mdctr import tracking
    from mdctr.tracking.champion import Rollout, start_canary
    from mdctr.tracking.names import CANARY, PROMOTE

    uri = tracking_uri_or_none(config.tracking_uri)
    name = config.name
    model_uri = f"models:/{name}/{config.version}"
    reason = config.reason or f"gate: {PROMOTE}"
    champion = tracking.alias_version(uri, tracking.CHAMPION, name=name)
    written: list[tuple[Path, str]] = []

    def write(rollout: Rollout) -> None:
        written.append(
            write_rollout_manifest(
                manifest_path,
                rollout,
                name=name,
                tracking_uri=uri,
                namespace=config.namespace,
                artifacts_destination=config.artifacts_destination,
            )
        )

    if config.canary_percent and champion not in (None, str(config.version)):
        start_canary(
            uri,
            config.version,
            name=name,
            percent=int(config.canary_percent),
            gated=reason,
            before_move=write,
        )
        (path, storage), alias = written[-1], CANARY
    else:
        write(Rollout(config.version))
        (path, storage), alias = written[-1], tracking.CHAMPION
        tracking.promote(uri, config.version, name=name, reason=reason)
    log.info("%s is now %s of %s; KServe manifest %s (storage %s)", model_uri, alias, name, path, storage)
    return PromoteOutput(
        model_uri=model_uri, service_name=name, manifest_path=path, storage_uri=storage, alias=alias
    )
