"""A ``train_model`` entry as a Kubeflow Trainer TrainJob, the task's side (the pods' side is
:mod:`mdctr.steps.trainjob_pod`; the job's manifest and its submission are :mod:`mdctr.trainjob`).

The task (``train_backend="trainjob"``) builds the job with :func:`mdctr.trainjob.trainjob_spec`, submits it
and waits (:func:`mdctr.trainjob.submit_and_wait`), then copies the bundle and results the job wrote back into
its own output directories, so evaluate, register and the KFP UI see the same artifacts as for an entry trained
in the task. The job's pods publish ``bundle/`` and then ``results/`` under the job's output location.

Locations are URIs the pods can read and write: ``s3://…`` (KFP's artifact URIs; credentials from the
pipeline's S3 Secret, read through fsspec/s3fs) or a path on a volume every pod mounts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from mdctr.steps.train_config import TrainStepConfig, TrainStepOutput
from mdctr.training.entry_result import EntryResult

log = logging.getLogger(__name__)

BUNDLE = "bundle"
RESULTS = "results"


def _fs(uri: str) -> tuple[object, str, bool]:
    """(fsspec filesystem, path within it, whether it is the local disk) for ``uri``."""
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    if uri.startswith("minio://"):  # KFP's name for its MinIO pipeline root: S3 at $AWS_ENDPOINT_URL_S3
        uri = "s3://" + uri.removeprefix("minio://")
    fs, path = url_to_fs(uri)
    return fs, path, isinstance(fs, LocalFileSystem)


def fetch_tree(uri: str, dest: Path) -> Path:
    """Copy the directory at ``uri`` (``s3://…`` or a path) into ``dest``; returns ``dest``."""
    fs, path, local = _fs(uri)
    if not fs.isdir(path):  # type: ignore[attr-defined]
        raise FileNotFoundError(f"{uri}: no such directory")
    dest.mkdir(parents=True, exist_ok=True)
    if local:
        shutil.copytree(path, dest, dirs_exist_ok=True)
    else:
        fs.get(path.rstrip("/") + "/", str(dest) + "/", recursive=True)  # type: ignore[attr-defined]
    return dest


def publish_tree(src: Path, uri: str) -> None:
    """Copy the local directory ``src`` to ``uri`` (``s3://…`` or a path), overwriting files of the same name."""
    fs, path, local = _fs(uri)
    if local:
        shutil.copytree(src, path, dirs_exist_ok=True)
    else:
        fs.put(str(src) + "/", path.rstrip("/") + "/", recursive=True)  # type: ignore[attr-defined]


def readable_dir(uri: str, dest: Path) -> Path:
    """A local directory holding ``uri``: the path itself on a shared volume, else a fetched copy."""
    _, path, local = _fs(uri)
    if local:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{uri}: no such directory (is the volume mounted in every pod?)")
        return Path(path)
    return fetch_tree(uri, dest)


def local_path(uri: str) -> Path | None:
    """The path ``uri`` names on this machine (a local or shared-volume path), or None for a remote URI."""
    _, path, local = _fs(uri)
    return Path(path) if local else None


def train_in_trainjob(
    *,
    prepared_uri: str,
    domains_uri: str,
    results_uri: str,
    bundle_dir: Path,
    results_dir: Path,
    config: TrainStepConfig,
) -> TrainStepOutput:
    """Run ``config``'s entry as a TrainJob of ``config.train_nodes`` pods and read its outputs back.

    The entry is checked here first (model, domain source, options), so a mistake fails the task before any
    pod starts. The job's image and cluster settings are the pipeline's (:data:`mdctr.trainjob.SETTINGS_ENV`,
    compiled onto the task); the namespace and credentials are the task's ServiceAccount's.
    """
    from mdctr import trainjob
    from mdctr.config import from_dict
    from mdctr.routing import DomainRouting, check_domain_source
    from mdctr.steps.common import parse_options
    from mdctr.training import TrainConfig

    check_domain_source(config.model_name, config.domain_source)
    from_dict(TrainConfig, parse_options(config.train_options, what="train_options"), where="train_options")
    model_cfg = parse_options(config.model_options, what="model_options")
    routing = DomainRouting.for_model(config.model_name, config.domain_source, model_overrides=model_cfg)
    if routing.needs_miner and not domains_uri:
        raise FileNotFoundError(f"domain source {config.domain_source!r} needs the mine_domains output")
    output_uri = results_uri.rstrip("/") + ".trainjob"
    settings, image = trainjob.job_settings_from_json(os.environ.get(trainjob.SETTINGS_ENV, ""))
    # the job trains the entry in its own processes: the same config, with the task backend
    job_config = dataclasses.replace(config, train_backend="task", train_nodes=1)
    spec = trainjob.trainjob_spec(
        name=trainjob.job_name(config.model_name, config.domain_source, config.seed, output_uri),
        model=config.model_name,
        domain_source=config.domain_source,
        prepared_uri=prepared_uri,
        output_uri=output_uri,
        domains_uri=domains_uri if routing.needs_miner else "",
        num_nodes=config.train_nodes,
        num_proc_per_node=settings.gpu_count if settings.gpu_accelerator else 1,
        image=image,
        settings=settings,
        step_config=json.dumps(dataclasses.asdict(job_config)),
    )
    api_client, namespace = trainjob.load_api_client()
    trainjob.submit_and_wait(spec, namespace=namespace, api_client=api_client)
    name = spec["metadata"]["name"]
    try:
        fetch_tree(f"{output_uri}/{BUNDLE}", bundle_dir)
        fetch_tree(f"{output_uri}/{RESULTS}", results_dir)
        result = EntryResult.read(results_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"TrainJob {namespace}/{name} completed but its outputs are missing: {e}"
        ) from e
    log.info("TrainJob %s/%s: auc %.5f", namespace, name, result.overall.auc)
    return TrainStepOutput.of(result, bundle_dir=bundle_dir, results_dir=results_dir)
