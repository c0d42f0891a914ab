"""Dataset-layer benchmark: ML-1M load + prepare wall time, and synthetic generation time at 10M rows.

Usage::

    .venv/bin/python benchmarks/bench_data.py [--datasets-dir ../shared/datasets] [--rows 10000000] \
        [--repeats 3] [--out docs/benchmarks/data.md]

Writes a Markdown table (median of ``--repeats`` runs, min and max too) with the command and machine info.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mdctr.data import load_dataset
from mdctr.data.prepare import write_prepared
from mdctr.data.synthetic import generate

log = logging.getLogger("bench_data")
ML1M_TARGET_S = 10.0


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_ml1m(datasets_dir: Path, repeats: int) -> dict[str, list[float]]:
    loads, prepares, totals = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            loaded = load_dataset("ml-1m", datasets_dir)
            t1 = time.perf_counter()
            write_prepared(loaded, Path(tmp) / "prepared")
            t2 = time.perf_counter()
            loads.append(t1 - t0)
            prepares.append(t2 - t1)
            totals.append(t2 - t0)
    return {"load": loads, "prepare": prepares, "total": totals}


def row(name: str, secs: list[float], note: str = "") -> str:
    return f"| {name} | {statistics.median(secs):.2f} | {min(secs):.2f} | {max(secs):.2f} | {len(secs)} | {note} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets-dir", type=Path, default=Path(os.environ.get("DATASETS_DIR", "../shared/datasets"))
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="synthetic rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/data.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    ml = bench_ml1m(args.datasets_dir, args.repeats)
    syn = timed(lambda: generate(rows=args.rows), args.repeats)
    n_rows = len(load_dataset("ml-1m", args.datasets_dir).table)

    ok = "yes" if statistics.median(ml["total"]) <= ML1M_TARGET_S else "NO"
    command = "python benchmarks/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Dataset layer benchmark",
        "",
        f"Command: `{command.strip()}` (from the project root, with `.venv/bin/python`).",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, `nproc` = {os.cpu_count()}, "
        f"CPU {platform.processor() or platform.machine()}. The machine is shared with other jobs, so times "
        "vary between runs; the median is reported.",
        "",
        "| step | median s | min s | max s | runs | note |",
        "|---|---:|---:|---:|---:|---|",
        row("ML-1M (users 1–2999) load", ml["load"], f"{n_rows:,} rows, parse + join"),
        row("ML-1M (users 1–2999) prepare", ml["prepare"], "split, fit spec on train, encode, write parquet"),
        row("ML-1M (users 1–2999) load + prepare", ml["total"], f"target ≤ {ML1M_TARGET_S:.0f} s: {ok}"),
        row(f"synthetic generate, {args.rows:,} rows", syn, "defaults: 4 sparse, 2 dense, 4 domains"),
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
