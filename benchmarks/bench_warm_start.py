"""Warm start vs cold start on the 4 ML-1M periods (issue #26): validation AUC on the newest period, and the
epochs and seconds each needs to reach it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_warm_start.py [--model dnn --domains none] \\
        [--seeds 1] [--out runs/bench-warm-start]

Protocol (docs/benchmarks/warm-start.md):

* ``scripts/ml1m-periods`` cuts ML-1M (users 1–2999) by time into 4 periods of equal rows; table k holds
  periods 1..k. Period 1 is trained cold (time split, newest 20% of its rows for validation/test): the first
  champion.
* For k = 2..4, on table k with ``--eval-period`` = period k (validation = its older half, test = its newer):
  - **cold**: a fresh model on every row before period k;
  - **warm**: the champion's weights (vocabularies merged, :mod:`mdctr.training.warm`) on the same rows;
  - **warm, window**: the champion on period k-1 only (``--train-window`` = period k-1), the daily-retrain case;
  - **champion**: the champion itself, not retrained, on the same validation rows.
  The warm model then becomes the champion of period k+1 (the loop a recurring run makes).
* Each run: Adam (lr 1e-3 cold, ``--warm-lr`` warm, default the same), batch 4096, patience 2, at most
  ``--max-epochs`` epochs; the trainer keeps the best validation epoch. "to reach" = the first epoch whose validation AUC is at least cold's best, and the
  seconds (train + validation) up to and including it; cold's own figure is its best epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import importlib.util
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.data import load_dataset
from mdctr.data.encode import split_table
from mdctr.data.prepare import Periods, prepare_in_memory
from mdctr.serving.bundle import save_bundle
from mdctr.steps.train_model import load_warm_source
from mdctr.training import TrainConfig, predict_logits, train_model
from mdctr.training.metrics import auc_logloss
from mdctr.training.run import start_model

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_warm_start")


def _periods_module() -> Any:
    """``scripts/ml1m-periods`` as a module (the script has no ``.py`` suffix)."""
    loader = importlib.machinery.SourceFileLoader("ml1m_periods", str(ROOT / "scripts" / "ml1m-periods"))
    spec = importlib.util.spec_from_loader("ml1m_periods", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _save(trained: Any, path: Path, model: str, domains: str) -> Path:
    save_bundle(
        path,
        model=trained.model,
        model_name=model,
        model_config={},
        width=trained.width,
        spec=trained.spec,
        domain_source=domains,
    )
    return path


def _reach(history: list[dict[str, float]], target: float) -> tuple[int | None, float | None]:
    """(epochs, seconds) until the first epoch with validation AUC ≥ ``target``; (None, None) if never."""
    seconds = 0.0
    for h in history:
        seconds += float(h["seconds"])
        if h["valid_auc"] >= target - 1e-12:
            return int(h["epoch"]), seconds
    return None, None


def _row(name: str, trained: Any, target: float, period: int, seed: int) -> dict[str, Any]:
    epochs, secs = _reach(trained.fit.history, target)
    return {
        "period": period,
        "seed": seed,
        "run": name,
        "train_rows": int(trained.spec.meta["rows"]["train"]),
        "best_valid_auc": trained.fit.best_valid_auc,
        "best_epoch": trained.fit.best_epoch,
        "epochs_run": len(trained.fit.history),
        "to_reach_epochs": epochs,
        "to_reach_s": secs,
        "total_s": sum(float(h["seconds"]) for h in trained.fit.history),
        "test_auc": trained.metrics["auc"],
        "valid_auc_by_epoch": [round(float(h["valid_auc"]), 5) for h in trained.fit.history],
    }


def _champion_auc(source: Any, prepared: Any, model: str, domains: str) -> float:
    """The champion, not retrained, on ``prepared``'s validation rows (encoded onto its vocabularies)."""
    setup, _ = start_model(
        prepared,
        model,
        domains,
        warm=source,
        warm_fallback="error",
        width=1.0,
        model_config=None,
        miner=None,
        budget=None,
        seed=0,
    )
    valid = setup.routed.data.valid
    logits = predict_logits(setup.model, valid)
    return float(auc_logloss(valid.label.numpy().astype(np.float64), 1 / (1 + np.exp(-logits)))[0])


def run_period(
    k: int, table: Path, rec: dict[str, Any], prev: dict[str, Any], champion: Path, args: Any, seed: int
) -> tuple[list[dict[str, Any]], Any]:
    """Cold, warm, warm-window and champion rows for period ``k``; returns them and the warm model."""
    loaded = load_dataset("table", table)
    cfg = TrainConfig(epochs=args.max_epochs, seed=seed, patience=2, num_threads=args.threads)
    all_before = Periods(eval_period=str(rec["eval_period"]))
    # the window = period k-1: from its first timestamp to the eval period's start
    window = int(rec["newest_period_time"][0]) - int(prev["newest_period_time"][0])
    latest = Periods(train_window=f"{window}s", eval_period=str(rec["eval_period"]))
    source = load_warm_source(str(champion), tracking_uri=None, schema_name=loaded.schema.name)
    warm_cfg = dataclasses.replace(cfg, lr=args.warm_lr)
    cold = train_model(
        prepare_in_memory(loaded, split="time", periods=all_before), args.model, args.domains, config=cfg
    )
    target = cold.fit.best_valid_auc
    data = prepare_in_memory(loaded, split="time", periods=all_before, base_spec=source.spec)
    warm = train_model(data, args.model, args.domains, config=warm_cfg, warm=source)
    windowed = prepare_in_memory(loaded, split="time", periods=latest, base_spec=source.spec)
    warm_window = train_model(windowed, args.model, args.domains, config=warm_cfg, warm=source)
    rows = [
        _row("cold", cold, target, k, seed),
        _row("warm", warm, target, k, seed),
        _row("warm, window", warm_window, target, k, seed),
    ]
    rows.append(
        {
            "period": k,
            "seed": seed,
            "run": "champion",
            "best_valid_auc": _champion_auc(source, data, args.model, args.domains),
        }
    )
    return rows, warm


def unseen_shares(tables: Path, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per period k ≥ 2: the share of its validation rows whose user (movie) id never occurs in the rows before
    it: ids a warm start cannot bring anything for but the OOV row."""
    out = []
    for k in range(2, len(recs) + 1):
        loaded = load_dataset("table", tables / str(recs[k - 1]["table"]))
        parts = split_table(
            loaded.table, loaded.schema, kind="time", eval_period=str(recs[k - 1]["eval_period"])
        )
        row: dict[str, Any] = {"period": k}
        for col in ("user_id", "movie_id"):
            row[col] = float((~parts["valid"][col].isin(set(parts["train"][col]))).mean())
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--model", default="dnn")
    p.add_argument("--domains", default="none")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--warm-lr",
        type=float,
        default=1e-3,
        help="Adam lr of the warm runs (default: cold's, the trainer's 1e-3)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-warm-start")
    p.add_argument(
        "--unseen-only", action="store_true", help="print the unseen-id shares per period and stop"
    )
    p.add_argument(
        "--summarise", type=Path, default=None, help="print the summary of a results.json and stop"
    )
    args = p.parse_args()
    if args.summarise is not None:
        print(summary_markdown(json.loads(args.summarise.read_text())))
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        tables = Path(tmp) / "periods"
        recs = _periods_module().write_periods(args.source, tables)
        for u in unseen_shares(tables, recs):
            print(
                f"period {u['period']}: validation rows with an unseen user {u['user_id']:.1%}, movie {u['movie_id']:.1%}"
            )
        if args.unseen_only:
            return
        for seed in range(args.seeds):
            first = load_dataset("table", tables / str(recs[0]["table"]))
            cfg = TrainConfig(epochs=args.max_epochs, seed=seed, patience=2, num_threads=args.threads)
            trained = train_model(
                prepare_in_memory(first, split="time"), args.model, args.domains, config=cfg
            )
            champion = _save(trained, Path(tmp) / f"champion-{seed}-1", args.model, args.domains)
            for k in range(2, len(recs) + 1):
                got, warm = run_period(
                    k, tables / str(recs[k - 1]["table"]), recs[k - 1], recs[k - 2], champion, args, seed
                )
                rows += got
                champion = _save(warm, Path(tmp) / f"champion-{seed}-{k}", args.model, args.domains)
                log.info(
                    "period %d seed %d: %s", k, seed, [(r["run"], round(r["best_valid_auc"], 5)) for r in got]
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(to_markdown(rows))
    print()
    print(summary_markdown(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; wrote {args.out / 'results.json'}")


def _fmt(x: Any, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per (period, seed, run): AUCs, epochs and seconds to reach cold's AUC, and warm/cold time."""
    lines = [
        "| period | seed | run | train rows | valid AUC (best) | test AUC | epochs to cold's AUC | s to cold's AUC "
        "| ÷ cold's s | epochs run | s total |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cold_s = {(r["period"], r["seed"]): r["to_reach_s"] for r in rows if r["run"] == "cold"}
    for r in rows:
        base = cold_s.get((r["period"], r["seed"]))
        ratio = r.get("to_reach_s") / base if r.get("to_reach_s") is not None and base else None
        lines.append(
            f"| {r['period']} | {r['seed']} | {r['run']} | {_fmt(r.get('train_rows'), ',')} "
            f"| {_fmt(r['best_valid_auc'], '.4f')} | {_fmt(r.get('test_auc'), '.4f')} "
            f"| {_fmt(r.get('to_reach_epochs'), 'd')} | {_fmt(r.get('to_reach_s'), '.1f')} | {_fmt(ratio, '.2f')} "
            f"| {_fmt(r.get('epochs_run'), 'd')} | {_fmt(r.get('total_s'), '.1f')} |"
        )
    return "\n".join(lines)


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """Per period: mean best validation AUC of each run over the seeds, how many seeds warm (window) ended at or
    above cold, and each run's best epoch per seed."""
    runs = ("cold", "warm", "warm, window", "champion")
    lines = [
        "| period | "
        + " | ".join(f"{r} valid AUC" for r in runs)
        + " | warm ≥ cold (seeds) | window ≥ cold (seeds) | best epoch per seed: cold · warm · window |",
        "|---|" + "---|" * (len(runs) + 3),
    ]
    for k in sorted({r["period"] for r in rows}):
        by = {name: [r for r in rows if r["period"] == k and r["run"] == name] for name in runs}
        mean = {name: float(np.mean([r["best_valid_auc"] for r in by[name]])) for name in runs}

        def at_least_cold(name: str, by: dict[str, list[dict[str, Any]]] = by) -> str:
            ok = sum(
                w["best_valid_auc"] >= c["best_valid_auc"] for w, c in zip(by[name], by["cold"], strict=True)
            )
            return f"{ok}/{len(by['cold'])}"

        def epochs(name: str, by: dict[str, list[dict[str, Any]]] = by) -> str:
            return "/".join(str(r["best_epoch"]) for r in by[name])

        lines.append(
            f"| {k} | "
            + " | ".join(f"{mean[name]:.4f}" for name in runs)
            + f" | {at_least_cold('warm')} | {at_least_cold('warm, window')} "
            f"| {epochs('cold')} · {epochs('warm')} · {epochs('warm, window')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
