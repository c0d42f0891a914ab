"""The pods' side of a ``train_model`` entry run as a Kubeflow Trainer TrainJob: the ``torchrun --module``
entry every pod runs (:data:`mdctr.trainjob.STEP_MODULE`, ``python -m mdctr.steps.trainjob_pod``).

Every rank fetches the inputs, runs the same :func:`~mdctr.steps.train_model.train_model` step as a task does
(DDP on its share of every batch), and rank 0 alone logs the MLflow run and publishes ``bundle/`` and then
``results/`` under ``--out``, where the task (:mod:`mdctr.steps.trainjob_task`) reads them back.

Locations are URIs the pods can read and write: ``s3://…`` (KFP's artifact URIs; credentials from the
pipeline's S3 Secret, read through fsspec/s3fs) or a path on a volume every pod mounts.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from mdctr.steps.mine_domains import MINER_DIR
from mdctr.steps.train_config import TrainStepConfig, is_main_rank
from mdctr.steps.train_model import train_model
from mdctr.steps.trainjob_task import BUNDLE, RESULTS, local_path, publish_tree, readable_dir

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """The job's side: ``torchrun --module mdctr.steps.trainjob_pod --prepared URI --domains URI --out URI
    --config JSON`` in every pod."""
    from mdctr.config import ConfigError, from_dict
    from mdctr.steps.common import parse_options

    parser = argparse.ArgumentParser(prog="python -m mdctr.steps.trainjob_pod", description=main.__doc__)
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
        prepared = readable_dir(args.prepared, tmp / "prepared")
        domains = None
        if args.domains:
            miner_uri = f"{args.domains.rstrip('/')}/{MINER_DIR}"
            readable_dir(miner_uri, tmp / "domains" / MINER_DIR)
            domains = local_path(args.domains) or tmp / "domains"
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
