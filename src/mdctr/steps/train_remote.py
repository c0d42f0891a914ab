"""A ``train_model`` entry as a Kubeflow Trainer TrainJob: the task's side and the job's side.

The task (``train_backend="trainjob"``) builds the job with :func:`mdctr.trainjob.trainjob_spec`, submits it
and waits (:func:`mdctr.trainjob.submit_and_wait`), then copies the bundle and results the job wrote back into
its own output directories, so evaluate, register and the KFP UI see the same artifacts as for an entry trained
in the task. The job's pods run this module under ``torchrun`` (``python -m mdctr.steps.train_remote``): every
rank fetches the inputs, runs the same :func:`~mdctr.steps.train_model.train_model` step (DDP on its share of
every batch), and rank 0 alone logs the MLflow run and publishes ``bundle/`` and then ``results/`` under
``--out``.

Locations are URIs the pods can read and write: ``s3://…`` (KFP's artifact URIs; credentials from the
pipeline's S3 Secret, read through fsspec/s3fs) or a path on a volume every pod mounts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from mdctr.steps.mine_domains import MINER_DIR
from mdctr.steps.train_model import (
    METRICS_FILE,
    TrainStepConfig,
    TrainStepOutput,
    is_main_rank,
    scalar_metrics,
    train_model,
)

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


def _readable(uri: str, dest: Path) -> Path:
    """A local directory holding ``uri``: the path itself on a shared volume, else a fetched copy."""
    _, path, local = _fs(uri)
    if local:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{uri}: no such directory (is the volume mounted in every pod?)")
        return Path(path)
    return fetch_tree(uri, dest)


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
        summary = json.loads((results_dir / METRICS_FILE).read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"TrainJob {namespace}/{name} completed but its outputs are missing: {e}"
        ) from e
    overall = summary["overall"]
    log.info("TrainJob %s/%s: auc %.5f", namespace, name, overall["auc"])
    return TrainStepOutput(
        bundle_dir=bundle_dir,
        results_dir=results_dir,
        run_id=summary["run_id"],
        metrics=scalar_metrics(overall, summary["per_domain"]),
        flops=float(overall["flops_per_sample"]),
        width=float(overall["width"]),
    )


def main(argv: list[str] | None = None) -> None:
    """The job's side: ``torchrun --module mdctr.steps.train_remote --prepared URI --domains URI --out URI
    --config JSON`` in every pod."""
    from mdctr.config import ConfigError, from_dict
    from mdctr.steps.common import parse_options

    parser = argparse.ArgumentParser(prog="python -m mdctr.steps.train_remote", description=main.__doc__)
    parser.add_argument("--prepared", required=True, help="prepare_data output (URI or shared path)")
    parser.add_argument("--domains", default="", help="mine_domains output; empty: the entry needs none")
    parser.add_argument("--out", required=True, help="rank 0 writes bundle/ and results/ here")
    parser.add_argument("--config", required=True, help="the entry's TrainStepConfig as a JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank{os.environ.get('RANK', '0')} %(message)s"
    )
    config = from_dict(TrainStepConfig, parse_options(args.config, what="--config"), where="--config")
    if config.train_backend != "task":
        raise ConfigError("--config: a job trains in its own processes; train_backend must be 'task'")
    with tempfile.TemporaryDirectory(prefix="mdctr-trainjob-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = _readable(args.prepared, tmp / "prepared")
        domains = None
        if args.domains:
            miner_uri = f"{args.domains.rstrip('/')}/{MINER_DIR}"
            _readable(miner_uri, tmp / "domains" / MINER_DIR)
            _, path, local = _fs(args.domains)
            domains = Path(path) if local else tmp / "domains"
        out = train_model(
            prepared_dir=prepared,
            domains_dir=domains,
            bundle_dir=tmp / BUNDLE,
            results_dir=tmp / RESULTS,
            config=config,
        )
        if is_main_rank():
            # results last: its metrics.json is what the task reads, so it marks a complete publication
            publish_tree(tmp / BUNDLE, f"{args.out.rstrip('/')}/{BUNDLE}")
            publish_tree(tmp / RESULTS, f"{args.out.rstrip('/')}/{RESULTS}")
            log.info("published %s and %s under %s (auc %.5f)", BUNDLE, RESULTS, args.out, out.metrics["auc"])


if __name__ == "__main__":
    main()
