"""The FLOP-matched grid (every model × domain source × seed) spread over worker processes, with a deadline.

A thin command line over the one grid runner (:func:`mdctr.steps.grid_run.run_grid`, which ``mdctr benchmark``
runs too): independent (seed, entry) runs on a pool of worker processes, seed-major, so that a machine with many
cores or one GPU shared by several processes finishes the grid in a fraction of the time; and, when
``--deadline-s`` runs out, it stops starting runs and writes the leaderboard of what finished (the file says how
many seeds each entry has). Each split's miner is pre-trained once, before the workers start, and loaded by each
(weights, no pickle).

    .venv/bin/python benchmarks/grid.py --dataset ml-1m --domains handcrafted,mined,none,random,binned \\
        --seeds 5 --workers 12 --device cuda --epochs 20 --patience 3 --deadline-s 300 --out runs/grid-ml1m

A default search is a grid whose entries are variants of one model: ``--variants`` maps a model to a list of
config overrides, each its own entry named by them (``adaptive2[data_init=True]/mined``), ranked on validation
like every leaderboard; ``--budget none`` trains every entry at its default sizes (width 1, no FLOP fitting):

    .venv/bin/python benchmarks/grid.py --models hamur --domains handcrafted,none --budget none \\
        --variants '{"hamur": [{}, {"adapter_per_domain": false}]}' --seeds 5 --out runs/search-hamur

**Resume.** Each finished run leaves ``OUT/runs/TAG.record.json`` (its leaderboard record and the settings it
ran with) and ``TAG.test_probs.npy``. Run the same command again (or with more seeds, or a later deadline) and
the runs already there are read back instead of trained again; a record whose settings differ from this
command's (the grid's options, the model's whole config with its defaults, the trainer's learning rate and
weight decay, the pre-trained miner's codes) is an error, not a silent mix. ``--records FILE`` keeps the runs
(without predictions) in one JSON-lines file to commit, so a grid can be finished in another session or on
another machine.

Output: ``OUT/leaderboard.{md,json,csv}`` (:func:`mdctr.evaluation.leaderboard.write_leaderboard`),
``OUT/runs/*.json`` (one summary per run, as ``mdctr benchmark`` writes), ``OUT/skipped.json`` (the pairs a model
does not accept), ``OUT/grid.json`` (settings, machine, wall time, runs trained, read back, and skipped by the
deadline).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.evaluation.significance import against_reference_markdown
from mdctr.steps.grid import PER_SEED, GridConfig, plan_grid
from mdctr.steps.grid_run import run_grid
from mdctr.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def parse_dataset_options(text: str) -> dict[str, Any]:
    """``--dataset-options`` JSON → the adapter's keyword options (e.g. the synthetic data's rows and sizes)."""
    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise SystemExit(f"--dataset-options: not JSON ({e})") from None
    if not isinstance(options, dict):
        raise SystemExit(f"--dataset-options: expected a JSON object, found {text!r}")
    return options


def parse_variants(text: str) -> dict[str, list[dict[str, Any]]]:
    """``--variants`` JSON (model → list of config overrides), each override's keys sorted (the run tags and entry
    names grids have always had)."""
    try:
        raw = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise SystemExit(f"--variants: not JSON ({e}): {text!r}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise SystemExit("--variants: expected a JSON object mapping a model to a list of config overrides")
    return {m: [json.loads(json.dumps(o, sort_keys=True)) for o in overrides] for m, overrides in raw.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument(
        "--dataset-options",
        type=parse_dataset_options,
        default={},
        help='JSON options of the dataset adapter, e.g. {"rows": 1000000, "vocab_size": 3000} for synthetic',
    )
    ap.add_argument(
        "--datasets-dir", default=os.environ.get("DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    )
    ap.add_argument("--models", default="", help="comma-separated (default: all registered)")
    ap.add_argument("--domains", default="handcrafted,mined,none,random,binned")
    ap.add_argument(
        "--variants", default="", help='JSON: model → list of config overrides, e.g. {"hamur": [{}]}'
    )
    ap.add_argument("--budget", default="model:dnn", help="FLOP budget, or none (default sizes, width 1)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--split-seed",
        default=PER_SEED,
        help=f"'{PER_SEED}' (default): model seed s trains on the random split drawn with seed s, so the spread "
        "over seeds includes the split's; an integer: that one split for every seed (0: what grids ran with "
        "before this option)",
    )
    ap.add_argument("--epochs", type=int, default=20, help="maximum epochs; early stopping ends most runs")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument(
        "--early-stop-metric",
        choices=("auc", "logloss"),
        default="auc",
        help="validation metric early stopping and the restored weights follow (auc: higher is better; "
        "logloss: lower is better)",
    )
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument(
        "--rerun-stale",
        action="store_true",
        help="train again the finished runs made with other settings (default: refuse, naming them)",
    )
    ap.add_argument("--deadline-s", type=float, default=float("inf"), help="start no run after this many s")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--valid-vs",
        default="",
        metavar="ENTRY",
        help="also print every entry against ENTRY (e.g. adaptive2/mined) on validation AUC: the table that "
        "chooses a default (paired t over seeds, Holm)",
    )
    ap.add_argument(
        "--records",
        type=Path,
        default=None,
        help="JSON-lines store of finished runs (records and settings, no predictions): read back, then rewritten "
        "with every run of this grid; commit it to finish a grid over several sessions or machines",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = GridConfig(
            dataset=args.dataset,
            out=args.out,
            models=[m for m in args.models.split(",") if m],
            domain_sources=args.domains.split(","),
            seeds=args.seeds,
            budget=args.budget,
            variants=parse_variants(args.variants),
            source_dir=Path(args.datasets_dir),
            dataset_options=args.dataset_options,
            split_seed=args.split_seed,
            train=TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                patience=args.patience,
                early_stop_metric=args.early_stop_metric,
                device=args.device,
                num_threads=args.threads,
            ),
            workers=args.workers,
            deadline_s=args.deadline_s,
            rerun_stale=args.rerun_stale,
            records=args.records,
            command=shlex.join(["benchmarks/grid.py", *(sys.argv[1:] if argv is None else argv)]),
        )
        names = plan_grid(config).names
        if args.valid_vs and args.valid_vs not in names:  # before any training, not after
            raise SystemExit(f"--valid-vs {args.valid_vs!r}: not an entry of this grid; entries: {names}")
        result = run_grid(config)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    if args.valid_vs and result.leaderboard is not None:
        by_entry: dict[str, dict[int, float]] = {}
        for r in result.records:
            by_entry.setdefault(f"{r['model']}/{r['domain_source']}", {})[r["seed"]] = r["valid_auc"]
        print(against_reference_markdown(by_entry, args.valid_vs, "valid AUC"))
    print(json.dumps(result.summary()))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
