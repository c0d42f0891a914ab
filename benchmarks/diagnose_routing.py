"""Does a trained ``adaptive2`` route and calibrate the same way at evaluation as in training?

Trains one ``adaptive2`` (one seed, the given config overrides), then scores the validation split twice:
as served (eval mode: every normalisation uses its running statistics) and with the normalisation layers
using batch statistics, as in training (nothing else changes and no statistic is updated). Per mined code it
prints the rows routed there, the AUC, and mean predicted vs observed CTR. A code whose row count or
calibration differs between the two passes is where a trained model goes wrong at evaluation.

    .venv/bin/python benchmarks/diagnose_routing.py --dataset epinions --seed 1 --epochs 1 --width 0.8984 \\
        --model-config '{"backbone": "star", "vq_grad_to_embedding": false}'
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.data.tensors import TensorData
from mdctr.models.adaptive2 import Adaptive2
from mdctr.training import TrainConfig, train_model

ROWS = 4096


@torch.no_grad()
def score(model: Adaptive2, data: TensorData, batch_stats: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N], codes [N]); with ``batch_stats`` every BatchNorm normalises by its batch.

    The batch-statistics pass runs on a copy, so the model's running statistics stay as trained.
    """
    if batch_stats:
        model = copy.deepcopy(model)
    model.eval()
    if batch_stats:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.train()
    probs, codes = [], []
    for start in range(0, len(data), ROWS):
        batch = data.batch(start, min(start + ROWS, len(data)))
        probs.append(torch.sigmoid(model(batch)))
        codes.append(model.last_codes)
    return torch.cat(probs).numpy(), torch.cat(codes).numpy()


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values[mask]``; NaN for an empty mask (a code no row is routed to)."""
    return float(values[mask].mean()) if mask.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="epinions")
    parser.add_argument("--datasets-dir", default=os.environ.get("DATASETS_DIR", "../shared/datasets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--model-config", default="{}", help="adaptive2 config overrides, as JSON")
    args = parser.parse_args()

    torch.set_num_threads(1)
    loaded = load_dataset(args.dataset, args.datasets_dir)
    prepared = prepare_in_memory(loaded)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, num_threads=1)
    overrides = json.loads(args.model_config)
    trained = train_model(
        prepared, "adaptive2", "mined", width=args.width, model_config=overrides, config=config
    )
    model = trained.model
    valid = prepared.valid
    labels = valid.label.numpy()
    served, codes_served = score(model, valid, batch_stats=False)
    batch, codes_batch = score(model, valid, batch_stats=True)
    print(
        f"adaptive2 {overrides} on {args.dataset}, seed {args.seed}, {args.epochs} epoch(s), width {args.width}"
    )
    print(
        f"validation AUC as served {roc_auc_score(labels, served):.4f}; with batch statistics "
        f"{roc_auc_score(labels, batch):.4f}; rows routed alike {np.mean(codes_served == codes_batch):.3f}"
    )
    print(
        "| code | rows served | rows (batch stats) | AUC served | mean p served | mean p (batch stats) | CTR |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in range(model.config.num_codes):
        sel, sel_b = codes_served == k, codes_batch == k
        auc = roc_auc_score(labels[sel], served[sel]) if len(set(labels[sel])) > 1 else float("nan")
        ctr = _masked_mean(labels, sel)
        print(
            f"| {k} | {sel.sum():,} | {sel_b.sum():,} | {auc:.4f} | {_masked_mean(served, sel):.3f} | "
            f"{_masked_mean(batch, sel):.3f} | {ctr:.3f} |"
        )


if __name__ == "__main__":
    main()
