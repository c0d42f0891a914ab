"""Kubernetes settings for the pipeline's tasks (kfp-kubernetes), applied once to every task of the DAG.

What a cluster run needs beyond the image: S3 credentials (DVC remote, KFP pipeline root, MLflow artifacts) and
MLflow credentials, both read from Kubernetes Secrets into environment variables; an image pull policy; CPU and
memory requests/limits (larger for training); optionally a GPU for training. Nothing here is read at run time:
the settings are compiled into the pipeline's platform spec.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

log = logging.getLogger(__name__)

#: Secret key → environment variable. Keys are named like the variables so that `kubectl create secret
#: generic … --from-env-file` works with a plain env file.
S3_SECRET_KEYS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
#: Optional S3 settings (endpoint of MinIO/Ceph, region); absent keys are allowed.
S3_OPTIONAL_KEYS: dict[str, str] = {
    "AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
}
MLFLOW_SECRET_KEYS: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_ARTIFACTS_DESTINATION": "MLFLOW_ARTIFACTS_DESTINATION",
}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one task, in Kubernetes quantity strings (CPU cores, memory bytes)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class ClusterSettings:
    """How tasks run on Kubernetes.

    Attributes:
        s3_secret: Secret holding ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (+ optional endpoint, region).
        mlflow_secret: Secret holding ``MLFLOW_TRACKING_URI`` (+ optional username/password).
        image_pull_policy: ``IfNotPresent`` for immutable version tags; ``Always`` while iterating on a tag.
        step: resources of every non-training task.
        training: resources of ``train_model`` (and the miner, which trains a VQ-VAE).
        gpu_accelerator: e.g. ``nvidia.com/gpu``; None keeps training on CPU.
        gpu_count: GPUs per training task when ``gpu_accelerator`` is set.
        env: plain environment variables for every task (telemetry off, unbuffered logs).
    """

    s3_secret: str = "mdctr-s3"
    mlflow_secret: str = "mdctr-mlflow"
    image_pull_policy: str = "IfNotPresent"
    step: Resources = Resources("500m", "2", "1Gi", "4Gi")
    training: Resources = Resources("2", "4", "4Gi", "16Gi")
    gpu_accelerator: str | None = None
    gpu_count: int = 1
    env: Mapping[str, str] = field(
        default_factory=lambda: {
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DVC_NO_ANALYTICS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )

    def __post_init__(self) -> None:
        if self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"image_pull_policy must be one of {PULL_POLICIES}, got {self.image_pull_policy!r}"
            )
        if self.gpu_count < 1:
            raise ValueError(f"gpu_count must be ≥ 1, got {self.gpu_count}")


def configure_task(task: PipelineTask, settings: ClusterSettings, *, heavy: bool = False) -> PipelineTask:
    """Apply secrets, env, pull policy and resources to one task; ``heavy`` picks the training resources."""
    from kfp import kubernetes

    kubernetes.use_secret_as_env(task, secret_name=settings.s3_secret, secret_key_to_env=S3_SECRET_KEYS)
    kubernetes.use_secret_as_env(
        task, secret_name=settings.s3_secret, secret_key_to_env=S3_OPTIONAL_KEYS, optional=True
    )
    kubernetes.use_secret_as_env(
        task, secret_name=settings.mlflow_secret, secret_key_to_env=MLFLOW_SECRET_KEYS, optional=True
    )
    kubernetes.set_image_pull_policy(task, settings.image_pull_policy)
    for name, value in settings.env.items():
        task.set_env_variable(name, value)
    res = settings.training if heavy else settings.step
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    if heavy and settings.gpu_accelerator:
        task.set_accelerator_type(settings.gpu_accelerator).set_accelerator_limit(settings.gpu_count)
    return task


def configure_tasks(
    tasks: Iterable[PipelineTask], settings: ClusterSettings, *, heavy: Iterable[PipelineTask] = ()
) -> None:
    """Apply :func:`configure_task` to every task; tasks in ``heavy`` get the training resources."""
    heavy_ids = {id(t) for t in heavy}
    n = 0
    for task in tasks:
        configure_task(task, settings, heavy=id(task) in heavy_ids)
        n += 1
    log.debug("applied cluster settings to %d task(s)", n)
