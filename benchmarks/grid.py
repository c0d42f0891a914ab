"""The FLOP-matched grid (every model × domain source × seed) spread over worker processes, with a deadline.

``mdctr benchmark`` trains the grid in one process. This script runs the same entries (the same routing, width
fitting and training as :func:`mdctr.evaluation.benchmark.run_benchmark`) as independent (seed, entry) runs on a
pool of worker processes, seed-major, so that a machine with many cores or one GPU shared by several processes
finishes the grid in a fraction of the time; and, when ``--deadline-s`` runs out, it stops starting runs and
writes the leaderboard of what finished (the file says how many seeds each entry has). The one shared miner is
pre-trained once, before the workers start, and loaded by each (weights, no pickle).

    .venv/bin/python benchmarks/grid.py --dataset ml-1m --domains handcrafted,mined,none,random,binned \\
        --seeds 5 --workers 12 --device cuda --epochs 20 --patience 3 --deadline-s 300 --out runs/grid-ml1m

Output: ``OUT/leaderboard.{md,json,csv}`` (:func:`mdctr.evaluation.leaderboard.write_leaderboard`),
``OUT/runs/*.json`` (one summary per run, as ``mdctr benchmark`` writes), ``OUT/grid.json`` (settings, machine,
wall time, runs finished and skipped by the deadline).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, write_leaderboard
from mdctr.io import write_json_atomic
from mdctr.models.base import model_names, plan_pairs
from mdctr.routing import DomainRouting, budget_for_data, count_batch, fit_width, model_inputs
from mdctr.training.config import TrainConfig
from mdctr.training.run import train_model

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("grid")

# per-worker state, loaded once by _init
_W: dict[str, Any] = {}


def _prepare(args: argparse.Namespace) -> PreparedData:
    return prepare_in_memory(load_dataset(args.dataset, args.datasets_dir))


def _init(args: argparse.Namespace, miner_dir: str | None, budget: float) -> None:
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    _W["args"], _W["budget"], _W["widths"] = args, budget, {}
    _W["prepared"] = _prepare(args)
    if miner_dir:
        from mdctr.domains.miner import DomainMiner

        _W["miner"] = DomainMiner.load(miner_dir)
    else:
        _W["miner"] = None


def _run(seed: int, name: str, source: str, deadline: float) -> dict[str, Any] | None:
    """One (entry, seed) run, or None when the deadline passed before it started."""
    if time.time() > deadline:
        return None
    args, prepared = _W["args"], _W["prepared"]
    routing = DomainRouting.for_model(name, source, miner=_W["miner"])
    if (name, source) not in _W["widths"]:
        routed = routing.route(prepared)
        fitted = fit_width(name, routed.inputs, _W["budget"], count_batch(routed.data.valid), None, routing)
        _W["widths"][name, source] = fitted.width
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=seed,
        device=args.device,
        num_threads=args.threads,
    )
    trained = train_model(
        prepared, name, source, width=_W["widths"][name, source], miner=routing.miner, config=config
    )
    tag = f"{name}-{source}-seed{seed}"
    out = Path(args.out) / "runs"
    summary = trained.summary() | {"budget": args.budget, "budget_flops": _W["budget"], "model_config": {}}
    write_json_atomic(out / f"{tag}.json", summary)
    np.save(out / f"{tag}.test_probs.npy", trained.predictions.astype(np.float32))
    return RunRecord.from_trained(trained).to_json() | {"tag": tag}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument(
        "--datasets-dir", default=os.environ.get("DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    )
    ap.add_argument("--models", default="", help="comma-separated (default: all registered)")
    ap.add_argument("--domains", default="handcrafted,mined,none,random,binned")
    ap.add_argument("--budget", default="model:dnn")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20, help="maximum epochs; early stopping ends most runs")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument("--deadline-s", type=float, default=float("inf"), help="start no run after this many s")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    deadline = t0 + args.deadline_s
    torch.set_num_threads(args.threads)

    prepared = _prepare(args)
    models = [m for m in args.models.split(",") if m] or model_names()
    plan, unsupported = plan_pairs(models, args.domains.split(","))
    routings = [DomainRouting.for_model(n, s) for n, s in plan]
    miner, miner_dir = None, None
    if any(r.needs_miner for r in routings):
        from mdctr.domains.miner import MinerConfig, fit_miner

        miner = fit_miner(prepared.train, model_inputs(prepared, 1), MinerConfig())
        miner_dir = str(args.out / "miner")
        miner.save(miner_dir)
    budget = budget_for_data(prepared, args.budget, miner)
    tasks = [(seed, n, s) for seed in range(args.seeds) for n, s in plan]
    log.info("%d entries × %d seeds = %d runs on %d workers", len(plan), args.seeds, len(tasks), args.workers)

    records, skipped, failed = [], [], []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx, initargs=(args, miner_dir, budget),
                                initializer=_init) as pool:  # fmt: skip
        futures = {pool.submit(_run, *task, deadline): task for task in tasks}
        for done in cf.as_completed(futures):
            task = futures[done]
            try:
                result = done.result()
            except Exception as e:  # one broken run must not lose the others: it is listed, not hidden
                failed.append({"task": list(task), "error": f"{type(e).__name__}: {e}"})
                log.error("run %s failed: %s", task, e)
                continue
            if result is None:
                skipped.append(list(task))
            else:
                records.append(result)
                log.info("%s: test AUC %.4f (%d/%d)", result["tag"], result["auc"], len(records), len(tasks))

    labels = prepared.test.label.numpy()
    runs = []
    for rec in records:
        probs = np.load(args.out / "runs" / f"{rec['tag']}.test_probs.npy").astype(np.float64)
        fields = {k: v for k, v in rec.items() if k != "tag"}
        runs.append(RunRecord(**fields, labels=labels, probs=probs))
    wall = time.time() - t0
    if runs:
        df = build_leaderboard(runs)
        df.attrs.update(budget=args.budget, budget_flops=budget, dataset=args.dataset)
        write_leaderboard(df, args.out, title=f"FLOP-matched leaderboard: {args.dataset}")
    write_json_atomic(
        args.out / "grid.json",
        {
            "command": shlex.join(["benchmarks/grid.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "wall_s": wall,
            "runs_finished": len(records),
            "runs_planned": len(tasks),
            "skipped_by_deadline": skipped,
            "failed": failed,
            "unsupported": [list(p) for p in unsupported],
            "budget_flops": budget,
        },
    )
    print(
        json.dumps({"finished": len(records), "planned": len(tasks), "failed": len(failed), "wall_s": wall})
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
