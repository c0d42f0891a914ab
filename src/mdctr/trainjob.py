"""A Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) that trains one model with DDP on N nodes.

:func:`trainjob_spec` is the one place that builds the job: the ``torch-distributed`` runtime starts
``num_nodes`` pods and sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` in each; ``torchrun`` reads those, and every process runs ``mdctr train`` on its share of the
rows (:mod:`mdctr.training.distributed`). Credentials come from the same Secrets as the pipeline's own tasks
(:class:`mdctr.k8s.ClusterSettings`); the resources per node are the settings' training resources.

The returned dict is the manifest: submit it with ``kubectl apply -f`` or
``CustomObjectsApi.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", ns, "trainjobs", spec)``.
The cluster permissions this needs are listed in docs/deploy.md ("Training on several nodes").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mdctr.k8s import MLFLOW_SECRET_KEYS, S3_OPTIONAL_KEYS, S3_SECRET_KEYS, ClusterSettings

API_VERSION = "trainer.kubeflow.org/v1alpha1"
RUNTIME = "torch-distributed"
_NAME_RE = re.compile(
    r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)  # a DNS-1035 label (TrainJob names become pod names)
#: MLflow keys a cluster run cannot do without; the others (credentials, artifact root) are optional
_MLFLOW_REQUIRED = ("MLFLOW_TRACKING_URI",)


def _default_image() -> str:
    import mdctr

    image_ref = getattr(mdctr, "image_ref", None)
    return image_ref() if callable(image_ref) else mdctr.IMAGE


def _secret_env(secret: str, keys: dict[str, str], optional: bool | Sequence[str]) -> list[dict[str, Any]]:
    env = []
    for key, var in keys.items():
        opt = optional if isinstance(optional, bool) else key not in optional
        env.append(
            {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": opt}}}
        )
    return env


def trainjob_spec(
    *,
    name: str,
    model: str,
    prepared_uri: str,
    output_uri: str,
    domain_source: str = "handcrafted",
    num_nodes: int = 2,
    num_proc_per_node: int = 1,
    namespace: str | None = None,
    image: str | None = None,
    settings: ClusterSettings | None = None,
    epochs: int = 5,
    batch_size: int = 4096,
    seed: int = 0,
    streaming: str = "auto",
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """The TrainJob manifest for one ``train_model`` entry.

    Args:
        name: the TrainJob's name (a DNS-1035 label: lowercase, digits, ``-``; at most 63 characters).
        model, domain_source: what ``mdctr train`` trains.
        prepared_uri: the prepared data directory (``train/valid/test.parquet`` + ``feature_spec.json``) as the
            pods see it (a mounted volume path).
        output_uri: where rank 0 writes the result (``summary.json``, the model state); as the pods see it.
        num_nodes: training pods; ``num_proc_per_node``: processes (ranks) per pod (GPUs per node on CUDA).
        namespace: namespace of the job (None: the one it is applied in).
        image: container image (default: this code's image, :func:`mdctr.image_ref`).
        settings: Secrets, resources, GPU and env (default: :class:`ClusterSettings`' defaults).
        epochs, batch_size, seed: the train config (``batch_size`` is the *global* batch over all ranks).
        streaming: ``on``, ``off`` or ``auto`` (stream the train split from parquet when it is large).
        extra_args: more ``mdctr train`` options, appended as given.
    """
    if not _NAME_RE.match(name):
        raise ValueError(
            f"TrainJob name {name!r} is not a DNS-1035 label (a-z, 0-9, '-', at most 63 characters)"
        )
    if num_nodes < 1 or num_proc_per_node < 1:
        raise ValueError(
            f"num_nodes and num_proc_per_node must be >= 1; got {num_nodes}, {num_proc_per_node}"
        )
    if streaming not in ("on", "off", "auto"):
        raise ValueError(f"streaming must be on, off or auto; got {streaming!r}")
    if not prepared_uri or not output_uri:
        raise ValueError("prepared_uri and output_uri must name the data and artifact locations")
    s = settings or ClusterSettings()
    limits: dict[str, str] = {"cpu": s.training.cpu_limit, "memory": s.training.memory_limit}
    if s.gpu_accelerator:
        limits[s.gpu_accelerator] = str(s.gpu_count)
    env = [{"name": k, "value": v} for k, v in s.env.items()]
    env += [
        {"name": "MDCTR_PREPARED_URI", "value": prepared_uri},
        {"name": "MDCTR_OUTPUT_URI", "value": output_uri},
    ]
    env += _secret_env(s.s3_secret, S3_SECRET_KEYS, optional=False)
    env += _secret_env(s.s3_secret, S3_OPTIONAL_KEYS, optional=True)
    env += _secret_env(s.mlflow_secret, MLFLOW_SECRET_KEYS, optional=_MLFLOW_REQUIRED)
    # torchrun takes nnodes / nproc-per-node / node rank / master address from the runtime's PET_* variables
    command = ["torchrun", "--no-python", "mdctr", "train"]
    args = [
        "--prepared", prepared_uri,
        "--out", output_uri,
        "--model", model,
        "--domains", domain_source,
        "--epochs", str(epochs),
        "--batch-size", str(batch_size),
        "--seed", str(seed),
        "--streaming", streaming,
        *extra_args,
    ]  # fmt: skip
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {
            "app.kubernetes.io/part-of": "mdctr",
            "mdctr/model": model,
            "mdctr/domains": domain_source,
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {
                "name": RUNTIME,
                "apiGroup": "trainer.kubeflow.org",
                "kind": "ClusterTrainingRuntime",
            },
            "trainer": {
                "image": image or _default_image(),
                "command": command,
                "args": args,
                "env": env,
                "numNodes": num_nodes,
                "numProcPerNode": num_proc_per_node,
                "resourcesPerNode": {
                    "requests": {"cpu": s.training.cpu_request, "memory": s.training.memory_request},
                    "limits": limits,
                },
            },
        },
    }
