"""The FLOP-matched grid (every model × domain source × seed) spread over worker processes, with a deadline.

``mdctr benchmark`` trains the grid in one process. This script runs the same entries (the same routing, width
fitting and training as :func:`mdctr.evaluation.benchmark.run_benchmark`) as independent (seed, entry) runs on a
pool of worker processes, seed-major, so that a machine with many cores or one GPU shared by several processes
finishes the grid in a fraction of the time; and, when ``--deadline-s`` runs out, it stops starting runs and
writes the leaderboard of what finished (the file says how many seeds each entry has). The one shared miner is
pre-trained once, before the workers start, and loaded by each (weights, no pickle).

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
``OUT/runs/*.json`` (one summary per run, as ``mdctr benchmark`` writes), ``OUT/grid.json`` (settings, machine,
wall time, runs trained, read back, and skipped by the deadline).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.evaluation.benchmark import variant_name
from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, read_run_store, write_leaderboard
from mdctr.evaluation.significance import against_reference_markdown
from mdctr.io import write_json_atomic, write_text_atomic
from mdctr.models.base import model_config, model_names, plan_pairs
from mdctr.routing import DomainRouting, budget_for_data, count_batch, fit_width, model_inputs
from mdctr.training.config import TrainConfig
from mdctr.training.run import train_model

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("grid")

# per-worker state, loaded once by _init
_W: dict[str, Any] = {}

#: ``--split-seed`` value that gives every model seed its own split
PER_SEED = "seed"

#: the settings a resumed run must share with this command (the device may differ: it is recorded per run)
RESUME_KEYS = ("dataset", "budget", "epochs", "patience", "batch_size")


def split_seed_of(args: argparse.Namespace, seed: int) -> int:
    """The split a run of model seed ``seed`` trains on: its own (``--split-seed seed``, the default, so the spread
    over seeds includes the split's) or one fixed split for every seed."""
    return seed if args.split_seed == PER_SEED else int(args.split_seed)


def _prepare(args: argparse.Namespace, split_seed: int) -> PreparedData:
    loaded = load_dataset(args.dataset, args.datasets_dir, **args.dataset_options)
    return prepare_in_memory(loaded, seed=split_seed)


#: the trainer's settings that change a run's result and are not the grid's own options
TRAIN_KEYS = ("lr", "weight_decay", "aux_loss_weight")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {k: getattr(args, k) for k in RESUME_KEYS}
    # each only when it differs from what grids ran with before the option existed (no dataset options, one
    # split drawn with seed 0), so their stores still read back with --split-seed 0, and only then
    if args.dataset_options:
        settings["dataset_options"] = args.dataset_options
    if args.split_seed != "0":
        settings["split_seed"] = args.split_seed
    if args.early_stop_metric != "auc":  # the default, as for split_seed: older stores lack the key
        settings["early_stop_metric"] = args.early_stop_metric
    return settings


def parse_dataset_options(text: str) -> dict[str, Any]:
    """``--dataset-options`` JSON → the adapter's keyword options (e.g. the synthetic data's rows and sizes)."""
    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise SystemExit(f"--dataset-options: not JSON ({e})") from None
    if not isinstance(options, dict):
        raise SystemExit(f"--dataset-options: expected a JSON object, found {text!r}")
    return options


def resolved_config(name: str, overrides: str) -> dict[str, Any]:
    """The model's whole config (its defaults with the overrides) and the trainer's result-changing defaults, as
    JSON values: a stored run is read back only while these are what the code would train with now, so a
    default changed between sessions cannot mix old runs into a new grid."""
    model = dataclasses.asdict(model_config(name, json.loads(overrides) or None))
    train = {k: getattr(TrainConfig(), k) for k in TRAIN_KEYS}
    return json.loads(json.dumps({"model_config": model, "train_config": train}, default=str))


def run_tag(seed: int, name: str, overrides: str, source: str) -> str:
    """File-name stem of one run: ``hamur-handcrafted-seed0``, ``adaptive2[data_init=True]-mined-seed0``."""
    label = variant_name(name, json.loads(overrides))
    return re.sub(r"[^A-Za-z0-9_.,=\[\]-]", "_", f"{label}-{source}-seed{seed}")


def _device_name(device: str) -> str:
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return torch.cuda.get_device_name(0) if use_cuda else "cpu"


def miner_dir_of(out: Path, split_seed: int) -> Path:
    """Where the miner pre-trained on split ``split_seed``'s train rows is kept (one per split)."""
    return out / "miner" / f"split{split_seed}"


def _init(args: argparse.Namespace, uses_miner: bool, budget: float | None) -> None:
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    _W["args"], _W["budget"], _W["widths"], _W["uses_miner"] = args, budget, {}, uses_miner
    _W["prepared"], _W["miner"] = {}, {}


def _split(split_seed: int) -> tuple[PreparedData, Any]:
    """A worker's prepared split and its miner (None when no entry uses one), each loaded once per split."""
    if split_seed not in _W["prepared"]:
        _W["prepared"][split_seed] = _prepare(_W["args"], split_seed)
        if _W["uses_miner"]:
            from mdctr.domains.miner import DomainMiner

            _W["miner"][split_seed] = DomainMiner.load(miner_dir_of(Path(_W["args"].out), split_seed))
    return _W["prepared"][split_seed], _W["miner"].get(split_seed)


def _run(
    seed: int, name: str, overrides: str, source: str, deadline: float, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """One (entry, seed) run, or None when the deadline passed before it started; ``settings`` are recorded."""
    if time.time() > deadline:
        return None
    args = _W["args"]
    split_seed = split_seed_of(args, seed)
    prepared, miner = _split(split_seed)
    model_config = json.loads(overrides) or None
    routing = DomainRouting.for_model(name, source, miner=miner, model_overrides=model_config)
    key = (name, overrides, source, split_seed)
    if key not in _W["widths"]:
        if _W["budget"] is None:  # --budget none: the model's default sizes
            _W["widths"][key] = 1.0
        else:
            routed = routing.route(prepared)
            valid_batch = count_batch(routed.data.valid)
            fitted = fit_width(name, routed.inputs, _W["budget"], valid_batch, model_config, routing)
            _W["widths"][key] = fitted.width
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        early_stop_metric=args.early_stop_metric,
        seed=seed,
        device=args.device,
        num_threads=args.threads,
    )
    trained = train_model(
        prepared,
        name,
        source,
        width=_W["widths"][key],
        model_config=model_config,
        miner=routing.miner,
        config=config,
    )
    tag = run_tag(seed, name, overrides, source)
    out = Path(args.out) / "runs"
    summary = trained.summary() | {
        "budget": args.budget,
        "budget_flops": _W["budget"],
        "split_seed": split_seed,
        "model_config": model_config or {},
    }
    write_json_atomic(out / f"{tag}.json", summary)
    np.save(out / f"{tag}.test_probs.npy", trained.predictions.astype(np.float32))
    record = RunRecord.from_trained(trained).to_json()
    if model_config:  # a variant is its own leaderboard entry, named by its overrides
        record["model"] = variant_name(name, model_config)
    # written last: its presence marks the run complete for a resumed grid
    write_json_atomic(
        out / f"{tag}.record.json",
        {"record": record, "settings": settings, "device": _device_name(args.device)},
    )
    return record | {"tag": tag}


def _check_settings(saved: dict[str, Any], settings: dict[str, Any], where: str) -> None:
    """Refuse a run made with other settings (mixing them in one leaderboard would be wrong)."""
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ValueError(f"{where} ran with other settings ({detail})")


def read_back(out: Path, tag: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The finished run ``tag`` from an earlier invocation in ``out``, or None when it is not (completely) there.

    Raises ValueError when it ran with other settings."""
    path = out / "runs" / f"{tag}.record.json"
    if not (path.is_file() and (out / "runs" / f"{tag}.test_probs.npy").is_file()):
        return None
    saved = json.loads(path.read_text())
    _check_settings(saved["settings"], settings, str(path))
    return saved["record"] | {"tag": tag}


def parse_variants(text: str, models: list[str]) -> dict[str, list[str]]:
    """``--variants`` JSON (model → list of config overrides) → model → overrides as canonical JSON strings."""
    try:
        raw = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise SystemExit(f"--variants: not JSON ({e}): {text!r}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise SystemExit("--variants: expected a JSON object mapping a model to a list of config overrides")
    unknown = sorted(set(raw) - set(models))
    if unknown:
        raise SystemExit(f"--variants names models not in the grid: {unknown} (grid: {models})")
    return {m: [json.dumps(o, sort_keys=True) for o in raw.get(m, [{}])] for m in models}


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
    t0 = time.time()
    deadline = t0 + args.deadline_s
    torch.set_num_threads(args.threads)

    if args.split_seed != PER_SEED and not args.split_seed.isdigit():
        raise SystemExit(f"--split-seed: expected '{PER_SEED}' or an integer >= 0, found {args.split_seed!r}")
    split_seeds = sorted({split_seed_of(args, seed) for seed in range(args.seeds)})
    splits = {s: _prepare(args, s) for s in split_seeds}
    prepared = splits[split_seeds[0]]  # the budget is fitted on the first split (FLOPs do not depend on rows)
    models = [m for m in args.models.split(",") if m] or model_names()
    variants = parse_variants(args.variants, models)
    plan, unsupported = plan_pairs(models, args.domains.split(","))
    # one routing per entry (model, overrides as canonical JSON, source): it says whether the entry needs the miner
    routings = {
        (n, o, s): DomainRouting.for_model(n, s, model_overrides=json.loads(o))
        for n, s in plan
        for o in variants[n]
    }
    uses_miner = any(r.needs_miner for r in routings.values())
    miners: dict[int, Any] = {}
    if uses_miner:  # one miner per split, pre-trained on that split's train rows only
        from mdctr.domains.miner import STATE_FILE, DomainMiner, MinerConfig, fit_miner

        for s, data in splits.items():
            where = miner_dir_of(args.out, s)
            if (where / STATE_FILE).is_file():  # a resumed grid keeps the miner its runs used
                miners[s] = DomainMiner.load(where)
            else:
                miners[s] = fit_miner(data.train, model_inputs(data, 1), MinerConfig())
                miners[s].save(where)
    no_cap = args.budget.strip().lower() == "none"
    budget = None if no_cap else budget_for_data(prepared, args.budget, miners.get(split_seeds[0]))
    entries = list(routings)
    tasks = [(seed, n, o, s) for seed in range(args.seeds) for n, o, s in entries]
    names = sorted(f"{variant_name(n, json.loads(o))}/{s}" for n, o, s in entries)
    if args.valid_vs and args.valid_vs not in names:  # before any training, not after
        raise SystemExit(f"--valid-vs {args.valid_vs!r}: not an entry of this grid; entries: {names}")
    settings = _settings(args)
    fingerprint: dict[int, dict[str, str]] = {}
    for (
        s,
        miner,
    ) in miners.items():  # runs routed by a miner are comparable only when it assigns the same codes
        codes = miner.assign(splits[s].valid).numpy().astype(np.int64)
        fingerprint[s] = {"miner_codes_sha256": hashlib.sha256(codes.tobytes()).hexdigest()[:16]}

    configs = {(n, o): resolved_config(n, o) for n, o, _ in entries}

    def task_settings(task: tuple[int, str, str, str]) -> dict[str, Any]:
        seed, name, overrides, _ = task
        base = settings | configs[name, overrides]
        return base | fingerprint[split_seed_of(args, seed)] if routings[task[1:]].needs_miner else base

    (args.out / "runs").mkdir(parents=True, exist_ok=True)

    try:
        store = read_run_store(args.records)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    records, skipped, failed, resumed = [], [], [], 0
    todo, stale = [], []
    for task in tasks:
        tag = run_tag(*task)
        try:
            earlier = read_back(args.out, tag, task_settings(task))
            # else from the committed store (its predictions are not kept there)
            if earlier is None and tag in store:
                _check_settings(store[tag]["settings"], task_settings(task), f"{args.records}: {tag}")
                earlier = store[tag]["record"] | {"tag": tag}
        except ValueError as e:  # ran with other settings (e.g. a miner refitted on another CPU)
            stale.append(str(e))
            store.pop(tag, None)  # --rerun-stale: trained again below, and its line replaced in the store
            earlier = None
        if earlier is None:
            todo.append(task)
        else:
            records.append(earlier)
            resumed += 1
    if stale and not args.rerun_stale:
        raise SystemExit(
            f"{len(stale)} finished run(s) ran with other settings than this command's and cannot be mixed "
            "into one leaderboard:\n  " + "\n  ".join(stale) + "\nUse another --out / --records, or "
            "--rerun-stale to train them again (their stored results are replaced)."
        )
    for why in stale:
        log.warning("training again: %s", why)
    log.info(
        "%d entries × %d seeds = %d runs (%d read back from %s) on %d workers",
        len(entries), args.seeds, len(tasks), resumed, args.out, args.workers,
    )  # fmt: skip

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx, initargs=(args, uses_miner, budget),
                                initializer=_init) as pool:  # fmt: skip
        futures = {pool.submit(_run, *task, deadline, task_settings(task)): task for task in todo}
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
                log.info(
                    "%s: valid AUC %.4f (%d/%d)", result["tag"], result["valid_auc"], len(records), len(tasks)
                )

    labels = {s: data.test.label.numpy() for s, data in splits.items()}
    runs = []
    for rec in records:
        probs_file = args.out / "runs" / f"{rec['tag']}.test_probs.npy"
        # a run read from --records alone has no predictions: the leaderboard then needs ≥ 2 seeds for its tests
        probs = np.load(probs_file).astype(np.float64) if probs_file.is_file() else None
        fields = {k: v for k, v in rec.items() if k != "tag"}
        runs.append(RunRecord(**fields, labels=labels[split_seed_of(args, rec["seed"])], probs=probs))
    if args.records is not None:  # the store's runs plus this grid's, one JSON line each, sorted by tag
        rows = dict(store)  # runs of other models or seeds stay in the store
        for rec in records:
            path = args.out / "runs" / f"{rec['tag']}.record.json"
            if rec["tag"] not in store:
                rows[rec["tag"]] = json.loads(path.read_text())
        lines = [
            json.dumps({"tag": tag, **{k: row[k] for k in ("record", "settings", "device")}})
            for tag, row in sorted(rows.items())
        ]
        write_text_atomic(args.records, "\n".join(lines) + "\n")
    wall = time.time() - t0
    if runs:
        df = build_leaderboard(runs)
        df.attrs.update(budget=args.budget, budget_flops=budget, dataset=args.dataset)
        title = "Leaderboard at default sizes (no FLOP cap)" if no_cap else "FLOP-matched leaderboard"
        write_leaderboard(df, args.out, title=f"{title}: {prepared.spec.schema.name}")
        if args.valid_vs:
            by_entry: dict[str, dict[int, float]] = {}
            for r in runs:
                by_entry.setdefault(r.entry, {})[r.seed] = r.valid_auc
            print(against_reference_markdown(by_entry, args.valid_vs, "valid AUC"))
    write_json_atomic(
        args.out / "grid.json",
        {
            "command": shlex.join(["benchmarks/grid.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "device": _device_name(args.device),
            "torch": torch.__version__,
            "wall_s": wall,
            "runs_finished": len(records),
            "runs_read_back": resumed,
            "runs_planned": len(tasks),
            "skipped_by_deadline": skipped,
            "failed": failed,
            "unsupported": [list(p) for p in unsupported],
            "budget_flops": budget,
        },
    )
    print(
        json.dumps(
            {
                "finished": len(records),
                "read_back": resumed,
                "planned": len(tasks),
                "failed": len(failed),
                "wall_s": wall,
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
