"""A Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) that trains one model with DDP on N nodes.

:func:`trainjob_spec` is the one place that builds the job: the ``torch-distributed`` runtime starts
``num_nodes`` pods and sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` in each; ``torchrun`` reads those, and every process runs ``mdctr train`` on its share of the
rows (:mod:`mdctr.training.distributed`). Credentials come from the same Secrets as the pipeline's own tasks
(:class:`mdctr.k8s.ClusterSettings`); the resources per node are the settings' training resources.

The job runs either the ``mdctr train`` CLI (a standalone job) or, given ``step_config``, one pipeline
``train_model`` entry (:data:`STEP_MODULE`, the same step a task runs in its own pod).

The returned dict is the manifest: apply it with ``kubectl apply -f``, or submit it and wait for it with
:func:`submit_and_wait` (the ``kubernetes`` client's CustomObjectsApi: create, get, watch, and delete on a
timeout). The cluster permissions this needs are listed in docs/deploy.md ("Training on several nodes").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mdctr.k8s import MLFLOW_SECRET_KEYS, S3_OPTIONAL_KEYS, S3_SECRET_KEYS, ClusterSettings, Resources

log = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "trainjobs"
RUNTIME = "torch-distributed"
#: the module a pipeline entry's job runs under ``torchrun --module`` (one train_model entry)
STEP_MODULE = "mdctr.steps.trainjob_pod"
#: environment variable carrying the compiled image and cluster settings into the train task (JSON, see
#: :func:`job_settings_json`), so the jobs it creates use the same image, Secrets and resources as the pipeline
SETTINGS_ENV = "MDCTR_TRAINJOB_SETTINGS"
#: the pods of a TrainJob carry its name in this JobSet label (``kubectl logs -l …``)
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
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
    step_config: str | None = None,
    domains_uri: str = "",
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
        step_config: run one pipeline ``train_model`` entry instead of ``mdctr train``: its
            :class:`~mdctr.steps.train_config.TrainStepConfig` as a JSON object (which then holds the train
            settings: ``epochs``, ``batch_size``, ``seed``, ``streaming`` and ``extra_args`` are not used).
            Rank 0 writes ``bundle/`` and ``results/`` under ``output_uri``.
        domains_uri: the mine_domains output as the pods see it (``step_config`` only; ``""``: none).
    """
    _check_job(name, num_nodes, num_proc_per_node, streaming, prepared_uri, output_uri)
    s = settings or ClusterSettings()
    # no --nnodes etc.: torchrun takes them (and the node rank, master address) from the runtime's PET_* variables
    if step_config is not None:
        command, args = _step_command(prepared_uri, output_uri, step_config, domains_uri)
    else:
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
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": _job_metadata(name, namespace, model, domain_source),
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
                "env": _trainer_env(s, prepared_uri, output_uri),
                "numNodes": num_nodes,
                "numProcPerNode": num_proc_per_node,
                "resourcesPerNode": _resources_per_node(s),
            },
        },
    }


def _job_metadata(name: str, namespace: str | None, model: str, domain_source: str) -> dict[str, Any]:
    """The job's name, namespace (when given) and labels (what it trains)."""
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
    return metadata


def _check_job(
    name: str, num_nodes: int, num_proc_per_node: int, streaming: str, prepared_uri: str, output_uri: str
) -> None:
    """A ValueError for the first of :func:`trainjob_spec`'s arguments that cannot make a job."""
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


def _step_command(
    prepared_uri: str, output_uri: str, step_config: str, domains_uri: str
) -> tuple[list[str], list[str]]:
    """(command, args) of a job that runs one pipeline ``train_model`` entry (:data:`STEP_MODULE`)."""
    if not isinstance(json.loads(step_config), dict):
        raise ValueError(f"step_config must be a JSON object; got {step_config[:80]!r}")
    command = ["torchrun", "--module", STEP_MODULE]
    args = [
        "--prepared",
        prepared_uri,
        "--domains",
        domains_uri,
        "--out",
        output_uri,
        "--config",
        step_config,
    ]
    return command, args


def _trainer_env(s: ClusterSettings, prepared_uri: str, output_uri: str) -> list[dict[str, Any]]:
    """The pods' environment: the settings' env, the data and output locations, the S3 and MLflow Secrets."""
    env = [{"name": k, "value": v} for k, v in s.env.items()]
    env += [
        {"name": "MDCTR_PREPARED_URI", "value": prepared_uri},
        {"name": "MDCTR_OUTPUT_URI", "value": output_uri},
    ]
    env += _secret_env(s.s3_secret, S3_SECRET_KEYS, optional=False)
    env += _secret_env(s.s3_secret, S3_OPTIONAL_KEYS, optional=True)
    env += _secret_env(s.mlflow_secret, MLFLOW_SECRET_KEYS, optional=_MLFLOW_REQUIRED)
    return env


def _resources_per_node(s: ClusterSettings) -> dict[str, dict[str, str]]:
    """Requests and limits of one training pod: the settings' training resources, plus its GPUs if any."""
    limits: dict[str, str] = {"cpu": s.training.cpu_limit, "memory": s.training.memory_limit}
    if s.gpu_accelerator:
        limits[s.gpu_accelerator] = str(s.gpu_count)
    return {
        "requests": {"cpu": s.training.cpu_request, "memory": s.training.memory_request},
        "limits": limits,
    }


def job_name(model: str, domain_source: str, seed: int, key: str) -> str:
    """A DNS-1035 TrainJob name for one entry, stable for one ``key`` (the entry's output location), so a retried
    task finds the job its first try created instead of starting a second one."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]+", "-", f"{model}-{domain_source}".lower()).strip("-")
    return f"mdctr-{stem[:32].rstrip('-')}-s{seed}-{digest}"


def job_settings_json(settings: ClusterSettings, image: str) -> str:
    """The image and cluster settings of the pipeline, as the train task passes them to its jobs
    (:data:`SETTINGS_ENV`); read back with :func:`job_settings_from_json`."""
    return json.dumps({"image": image, "settings": dataclasses.asdict(settings)}, sort_keys=True)


def job_settings_from_json(text: str) -> tuple[ClusterSettings, str | None]:
    """(settings, image) from :func:`job_settings_json`'s text; ``""``: the defaults and this code's image."""
    if not text:
        return ClusterSettings(), None
    try:
        raw = json.loads(text)
        s = dict(raw["settings"])
        for key in ("step", "training"):
            s[key] = Resources(**s[key])
        return ClusterSettings(**s), raw["image"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{SETTINGS_ENV}: not the JSON job_settings_json writes ({e}): {text[:120]!r}"
        ) from e


def load_api_client() -> tuple[Any, str]:
    """(ApiClient, namespace) for where this process runs: in a pod, its ServiceAccount and namespace (the
    pipeline's task); elsewhere the kubeconfig's current context (``$KUBECONFIG``, else ``~/.kube/config``;
    namespace ``default`` if the context names none)."""
    from kubernetes import client, config

    sa_namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and sa_namespace.is_file():
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg), sa_namespace.read_text().strip()
    # read $KUBECONFIG now: the kubernetes package reads it once, when it is first imported
    config_file = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    try:
        config.load_kube_config(config_file=config_file, client_configuration=cfg)
        _, context = config.list_kube_config_contexts(config_file=config_file)
    except (config.ConfigException, OSError) as e:
        raise RuntimeError(
            f"train_backend 'trainjob' needs a Kubernetes API: not in a pod, and kubeconfig {config_file}: {e}"
        ) from e
    return client.ApiClient(cfg), (context or {}).get("context", {}).get("namespace") or "default"


class TrainJobFailed(RuntimeError):
    """The TrainJob ended with a ``Failed`` condition (or was deleted); the message names it and says why."""


def _terminal(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(``Complete``/``Failed``, reason and message) once a condition of that type is ``True``; else None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and str(cond.get("status")) == "True":
            why = ": ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
            return cond["type"], why
    return None


def submit_and_wait(
    spec: Mapping[str, Any],
    *,
    namespace: str,
    api_client: Any = None,
    timeout_s: float = 7 * 24 * 3600,
    watch_timeout_s: int = 300,
) -> dict[str, Any]:
    """Create the TrainJob ``spec`` (from :func:`trainjob_spec`) in ``namespace`` and wait until it completes.

    Waiting watches the one job (``watch`` on ``trainjobs`` with a name field selector, re-read with ``get``
    whenever the watch ends). A job of that name that already exists (a retried task) is waited for instead,
    unless it has failed: then it is deleted and created again. Past ``timeout_s`` the job is deleted.

    Returns:
        the job object with its ``Complete`` condition.

    Raises:
        TrainJobFailed: the job failed (its namespace/name, reason and message, and how to read its logs).
        TimeoutError: it did not finish within ``timeout_s`` (it has been deleted).
    """
    from kubernetes import client

    job = _Job(client.CustomObjectsApi(api_client), namespace, spec["metadata"]["name"])
    logs = f"kubectl -n {namespace} logs -l {JOBSET_LABEL}={job.name} --prefix"
    job.create_or_adopt({**spec, "metadata": {**spec["metadata"], "namespace": namespace}})
    deadline = time.monotonic() + timeout_s
    while True:
        obj = job.get()
        done = _terminal(obj)
        remaining = deadline - time.monotonic()
        if done is None and remaining > 0:
            obj, done = job.watch_until_done(obj, max(1, int(min(watch_timeout_s, remaining))))
        if done is not None:
            state, why = done
            if state == "Failed":
                raise TrainJobFailed(f"{job.where} failed: {why or 'no reason given'}; its logs: {logs}")
            log.info("%s completed", job.where)
            return obj
        if time.monotonic() >= deadline:
            job.delete()
            raise TimeoutError(
                f"{job.where} did not finish within {timeout_s:.0f} s; deleted it. Its logs: {logs}"
            )


@dataclasses.dataclass(frozen=True)
class _Job:
    """One TrainJob, by namespace and name, through a ``kubernetes`` CustomObjectsApi ``api``."""

    api: Any
    namespace: str
    name: str

    @property
    def where(self) -> str:
        return f"TrainJob {self.namespace}/{self.name}"

    def create(self, body: Mapping[str, Any]) -> None:
        self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self) -> dict[str, Any]:
        """The job object; :class:`TrainJobFailed` when it no longer exists."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except ApiException as e:
            if e.status == 404:
                raise TrainJobFailed(f"{self.where} disappeared while being waited for (deleted?)") from e
            raise

    def delete(self) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)

    def create_or_adopt(self, body: Mapping[str, Any]) -> None:
        """Create the job from ``body``; a job of that name that exists already (a retried task) is kept to be
        waited for, unless it has failed: then it is deleted and created again."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.create(body)
            log.info("created %s", self.where)
        except ApiException as e:
            if e.status != 409:
                raise RuntimeError(
                    f"creating {self.where} was refused: HTTP {e.status} {e.reason}: {e.body}"
                ) from e
            done = _terminal(self.get())
            if done is not None and done[0] == "Failed":
                log.info(
                    "%s exists and failed before (%s): deleting it and creating it again", self.where, done[1]
                )
                self.delete()
                _wait_gone(self.get, deadline=time.monotonic() + 120, where=self.where)
                self.create(body)
            else:
                log.info("%s exists already (a retried task): waiting for it", self.where)

    def watch_until_done(
        self, obj: dict[str, Any], timeout_seconds: int
    ) -> tuple[dict[str, Any], tuple[str, str] | None]:
        """Watch the job from ``obj``'s resource version for at most ``timeout_seconds``: (the job, its end as
        :func:`_terminal` gives it) once it ends, else (``obj``, None) (the watch timed out or expired)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        w = watch.Watch()
        try:
            for event in w.stream(
                self.api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={self.name}",
                resource_version=obj.get("metadata", {}).get("resourceVersion"),
                timeout_seconds=timeout_seconds,
            ):
                if event["type"] == "DELETED":
                    raise TrainJobFailed(f"{self.where} was deleted while being waited for")
                if event["type"] != "ERROR" and (done := _terminal(event["object"])) is not None:
                    return event["object"], done
        except ApiException as e:
            if e.status != 410:  # 410 Gone: the resource version expired; get() again
                raise
        finally:
            w.stop()
        return obj, None


def _wait_gone(get: Any, *, deadline: float, where: str) -> None:
    """Wait until the deleted job is gone (its finalisers ran), so that its name can be used again."""
    while time.monotonic() < deadline:
        try:
            get()
        except TrainJobFailed:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{where} was deleted but still exists after 120 s")
