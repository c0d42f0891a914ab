"""HAMUR's adapter on ML-1M (users 1–2999): does it matter, and which setting wins on validation?

Usage:
    .venv/bin/python benchmarks/hamur_adapter.py [--seeds 0,1,2,3,4] [--sources handcrafted,none]
        [--variants '{"default": {}, "ones": {"adapter_init": "ones"}}'] [--epochs 20] [--patience 2]
        [--threads N] [--jsonl runs.jsonl]

For every variant × domain source × seed: train ``hamur`` (default sizes, no FLOP cap, Adam 1e-3, wd 1e-5,
batch 4096) with early stopping on validation AUC (best weights restored; ``--epochs 1`` measures one epoch),
then score validation and test three ways: adapter ``on``; ``off`` (the adapters' residual branch dropped, so
the towers run bare); ``constant`` (H(x) = 0, so each adapter adds one fixed vector to every row: what is left
when the instance-specific part is removed). Prints one JSON line per run, then a Markdown summary (mean ± std
over seeds) ordered by validation AUC: choose on the validation columns, report the test columns.

``--saturation`` instead prints, per adapter init, the bottleneck's pre-sigmoid statistics at init on the
first batch of the train split (train mode, hand-crafted domains): median |z|, the fraction of values with
|z| > 4 (σ' < 0.018) and whether all r units are identical.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.evaluation.significance import against_reference_markdown
from mdctr.models import build_model
from mdctr.models.hamur import ADAPTER_INITS, ADAPTER_MODES
from mdctr.routing import DomainRouting
from mdctr.training import TrainConfig, predict, train_model
from mdctr.training.metrics import auc_logloss

ROOT = Path(__file__).resolve().parents[1]


def ablation_aucs(trained, prepared, source: str, batch_size: int) -> dict[str, float]:
    """Validation and test AUC of the trained model with each adapter mode ({split}_{mode} → AUC)."""
    routed = DomainRouting.for_model("hamur", source).route(prepared).data
    model = trained.model
    out: dict[str, float] = {}
    try:
        for mode in ADAPTER_MODES:
            model.adapter_mode = mode
            for split in ("valid", "test"):
                data = getattr(routed, split)
                auc, _ = auc_logloss(data.label.numpy(), predict(model, data, batch_size))
                out[f"{split}_{mode}"] = auc
    finally:
        model.adapter_mode = "on"
    return out


def saturation(prepared, batch_size: int, seed: int = 0) -> list[str]:
    """One line per adapter init: pre-sigmoid statistics of the bottleneck at init on one train batch."""
    routing = DomainRouting.for_model("hamur", "handcrafted").route(prepared)
    batch = routing.data.train.batch(0, min(batch_size, len(routing.data.train)))
    lines = []
    for init in ADAPTER_INITS:
        torch.manual_seed(seed)
        model = build_model("hamur", routing.inputs, config={"adapter_init": init})
        with torch.no_grad():
            model.train()(batch)
        pre = torch.cat([a.pre_activation for ads in model.adapters for a in ads.values()])
        identical = bool((pre == pre[:, :1]).all())
        lines.append(
            f"adapter_init={init}: median |z| {pre.abs().median():.3g}, "
            f"{(pre.abs() > 4).float().mean():.1%} of values |z| > 4, all units identical: {identical}"
        )
    return lines


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summary(runs: list[dict]) -> str:
    """Markdown table: one row per (variant, source), mean ± std over seeds, best validation first."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["variant"], r["source"]), []).append(r)
    order = sorted(groups, key=lambda g: -statistics.mean(r["valid_on"] for r in groups[g]))
    lines = [
        "| variant | source | seeds | valid AUC | test AUC | test AUC, adapter off | test AUC, H = 0 "
        "| best epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in order:
        rs = groups[g]
        lines.append(
            f"| {g[0]} | {g[1]} | {len(rs)} | {_mean_std([r['valid_on'] for r in rs])} "
            f"| {_mean_std([r['test_on'] for r in rs])} | {_mean_std([r['test_off'] for r in rs])} "
            f"| {_mean_std([r['test_constant'] for r in rs])} | {', '.join(str(r['best_epoch']) for r in rs)} |"
        )
    return "\n".join(lines)


def read_runs(paths: list[str]) -> list[dict]:
    """The runs of ``--jsonl`` files, one per (variant, source, seed): a later line replaces an earlier one."""
    runs: dict[tuple[str, str, int], dict] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                runs[r["variant"], r["source"], r["seed"]] = r
    return list(runs.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--sources", default="handcrafted,none")
    parser.add_argument("--variants", default='{"default": {}}', help="JSON: name → hamur config overrides")
    parser.add_argument("--epochs", type=int, default=20, help="maximum; early stopping ends a run")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--datasets-dir", default=os.environ.get("DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    )
    parser.add_argument("--jsonl", default="", help="also append each run's JSON line to this file")
    parser.add_argument("--saturation", action="store_true", help="only report the init's saturation")
    parser.add_argument(
        "--summarise",
        nargs="+",
        default=None,
        metavar="JSONL",
        help="train nothing: print the summary of the runs in these --jsonl files (a run listed twice counts once)",
    )
    parser.add_argument(
        "--reference",
        default="",
        metavar="VARIANT/SOURCE",
        help="with --summarise: also compare every other group with this one on validation AUC (paired by seed)",
    )
    args = parser.parse_args(argv)
    if args.summarise:
        runs = read_runs(args.summarise)
        print(summary(runs))
        if args.reference:
            by: dict[str, dict[int, float]] = {}
            for r in runs:
                by.setdefault(f"{r['variant']}/{r['source']}", {})[r["seed"]] = r["valid_on"]
            print("\n" + against_reference_markdown(by, args.reference, "valid AUC"))
        return 0
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = json.loads(args.variants)
    prepared = prepare_in_memory(load_dataset("ml-1m", args.datasets_dir))
    if args.saturation:
        print("\n".join(saturation(prepared, args.batch_size)))
        return 0
    runs = []
    for name, model_config in variants.items():
        for source in [s for s in args.sources.split(",") if s]:
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                t0 = time.perf_counter()
                config = TrainConfig(
                    epochs=args.epochs,
                    patience=min(args.patience, args.epochs),
                    lr=args.lr,
                    batch_size=args.batch_size,
                    seed=seed,
                    device="cpu",
                )
                trained = train_model(prepared, "hamur", source, model_config=model_config, config=config)
                run = {
                    "variant": name,
                    "config": model_config,
                    "source": source,
                    "seed": seed,
                    "epochs": len(trained.fit.history),
                    "best_epoch": trained.fit.best_epoch,
                    "valid_auc_per_epoch": [round(h["valid_auc"], 5) for h in trained.fit.history],
                    **ablation_aucs(trained, prepared, source, config.eval_batch_size),
                    "samples_per_s": round(trained.fit.train_samples_per_s),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                runs.append(run)
                line = json.dumps(run)
                print(line, flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(line + "\n")
    command = shlex.join(
        [".venv/bin/python", "benchmarks/hamur_adapter.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"\n```bash\n{command}\n```\n\n{summary(runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
