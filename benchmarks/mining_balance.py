"""What do ``adaptive2``'s jointly mined codes encode? Per variant (config overrides) and seed: the best
validation AUC (the one used to choose), test AUC (reported only), mean age per code, NMI of the codes with
every input feature on the train split, and the code churn per epoch.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mining_balance.py --dataset ml-1m --seeds 0,1 --epochs 3 \
        --variants '{"legacy": {}, "balanced": {"recon_balance": true}}'
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.domains import domain_report
from mdctr.models.adaptive2 import Adaptive2
from mdctr.training import TrainConfig, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--datasets-dir", default=os.environ.get("DATASETS_DIR", "../shared/datasets"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", default='{"legacy": {}, "balanced": {"recon_balance": true}}')
    args = parser.parse_args()

    torch.set_num_threads(1)
    prepared = prepare_in_memory(load_dataset(args.dataset, args.datasets_dir))
    dense = prepared.spec.schema.dense
    variants = json.loads(args.variants)
    print(f"{args.dataset}: {len(prepared.train)} train rows; epochs {args.epochs}; seeds {args.seeds}")
    print(
        "| variant | seed | valid AUC | test AUC | code means of " + ",".join(dense) + " | code shares | "
        "NMI per feature | churn per epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary: dict[str, list[tuple[float, float]]] = {}
    for name, overrides in variants.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            config = TrainConfig(epochs=args.epochs, seed=seed, num_threads=1, patience=args.epochs)
            trained = train_model(prepared, "adaptive2", "mined", model_config=overrides, config=config)
            model = trained.model
            assert isinstance(model, Adaptive2)
            codes = model.assign_codes(prepared.train).numpy()
            rep = domain_report(codes, prepared.train, prepared.spec, num_codes=model.config.num_codes)
            means = "; ".join(
                ",".join(f"{c['dense_means'].get(d, float('nan')):.1f}" for d in dense) for c in rep["codes"]
            )
            shares = ",".join(f"{c['share']:.2f}" for c in rep["codes"])
            nmi = ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(rep["feature_nmi"].items(), key=lambda t: -t[1])
            )
            churn = ",".join(f"{h['code_churn']:.3f}" for h in trained.fit.history if "code_churn" in h)
            valid, test = trained.fit.best_valid_auc, float(trained.metrics["auc"])
            summary.setdefault(name, []).append((valid, test))
            print(
                f"| {name} | {seed} | {valid:.4f} | {test:.4f} | {means} | {shares} | {nmi} | {churn} |"
                f" <!-- {time.perf_counter() - t0:.0f}s -->",
                flush=True,
            )
    for name, runs in summary.items():
        v, t = np.array(runs).T
        print(f"{name}: valid AUC {v.mean():.4f} ± {v.std():.4f}, test AUC {t.mean():.4f} ± {t.std():.4f}")


if __name__ == "__main__":
    main()
