"""Train throughput (samples/s, train loop only) of registered models on prepared ML-1M (users 1–2999).

Usage:
    .venv/bin/python benchmarks/bench_train.py [--models dnn,hamur] [--epochs 1] [--batch-size 4096]
        [--threads N] [--device auto|cpu|cuda] [--out docs/benchmarks/training.md]
        [--variants '{"hamur": [{"tower_batch": "masked"}, {"tower_batch": "sampled"}]}']

Each model routes by hand-crafted domains where it accepts them (else mined for self-mining models, else
none) at its default sizes (width 1); ``--variants`` trains a model once per config override instead, each row
named by its overrides (``hamur[tower_batch=sampled]``). Writes a Markdown table with the command, machine and torch settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.models import model_class, model_names
from mdctr.routing import mines_own_domains
from mdctr.steps.grid import variant_name
from mdctr.training import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[1]


def _source(name: str) -> str:
    accepted = model_class(name).domain_sources
    if "handcrafted" in accepted:
        return "handcrafted"
    if "mined" in accepted and mines_own_domains(name):
        return "mined"
    return "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated (default: all registered)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda")
    parser.add_argument(
        "--datasets-dir", default=os.environ.get("DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    )
    parser.add_argument(
        "--variants", default="{}", help="JSON: model → list of config overrides, each trained as its own row"
    )
    parser.add_argument("--note", default="", help="a line written under the table (e.g. machine load)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "training.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    models = [m for m in args.models.split(",") if m] or model_names()
    t0 = time.perf_counter()
    prepared = prepare_in_memory(load_dataset("ml-1m", args.datasets_dir))
    prep_s = time.perf_counter() - t0
    variants = json.loads(args.variants)
    rows = []
    for name, overrides in ((m, o) for m in models for o in variants.get(m, [{}])):
        source = _source(name)
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=args.epochs,
            num_threads=args.threads,
            device=args.device,
        )
        trained = train_model(prepared, name, source, config=config, model_config=overrides or None)
        rows.append(
            f"| {variant_name(name, overrides)} | {source} | {trained.fit.train_samples_per_s:,.0f} | {trained.flops:,.0f} | "
            f"{trained.dense_params:,} | {trained.metrics['auc']:.4f} | {trained.fit.wall_s:.1f} |"
        )
        print(rows[-1], flush=True)

    command = shlex.join(
        [".venv/bin/python", "benchmarks/bench_train.py", *(sys.argv[1:] if argv is None else argv)]
    )
    device = TrainConfig(device=args.device).resolve_device()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    text = "\n".join(
        [
            "# Training throughput",
            "",
            "Train-loop samples/s (no validation) on ML-1M (users 1–2999), random 80/10/10 split "
            f"({len(prepared.train):,} train rows), batch {args.batch_size}, {args.epochs} epoch(s), "
            "default model sizes (width 1). Test AUC after so few epochs is only a sanity check.",
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
            f"{device} ({device_name}); data preparation took {prep_s:.1f}s.",
            "",
            "| model | domain source | train samples/s | FLOPs/sample | dense params | test AUC | wall s |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            *([args.note, ""] if args.note else []),
        ]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
