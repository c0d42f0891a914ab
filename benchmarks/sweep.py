"""Train one model under several settings on one dataset and print test AUC per setting (one JSON line each).

Each grid entry may set ``model``, ``src`` (domain source), ``lr``, ``wd``, ``bs``, ``epochs`` and ``mc``
(model config overrides); everything else is the trainer's default (Adam, early stopping, seed 0).

    .venv/bin/python benchmarks/sweep.py --dataset ml-1m '[{"lr": 2e-3}, {"mc": {"dropout": 0.2}}]'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.training import TrainConfig, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", help="JSON list of settings")
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--datasets-dir", default=os.environ.get("DATASETS_DIR", "../shared/datasets"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    prepared = prepare_in_memory(load_dataset(args.dataset, args.datasets_dir))
    for entry in json.loads(args.grid):
        t0 = time.perf_counter()
        config = TrainConfig(
            epochs=entry.get("epochs", 5),
            lr=entry.get("lr", 1e-3),
            weight_decay=entry.get("wd", 1e-5),
            batch_size=entry.get("bs", 4096),
            seed=entry.get("seed", 0),
        )
        trained = train_model(
            prepared,
            entry.get("model", "hamur"),
            entry.get("src", "handcrafted"),
            model_config=entry.get("mc"),
            config=config,
        )
        print(
            json.dumps(
                {
                    **entry,
                    "test_auc": round(trained.metrics["auc"], 4),
                    "best_epoch": trained.fit.best_epoch,
                    "valid_auc_per_epoch": [round(h["valid_auc"], 4) for h in trained.fit.history],
                    "seconds": round(time.perf_counter() - t0),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
