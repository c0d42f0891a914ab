"""Monitoring a served-request log window: wall time and peak memory at 100k and 1M logged requests.

An ML-1M-shaped synthetic table (6 sparse columns of 4,000 ids, 1 dense column, 3 hand-crafted domains) is
prepared as the reference (200k rows) and, drawn again with another sample seed, replayed as a request log in
the real layout (``mdctr.monitoring.replay.write_log``: date partitions, 50k-row zstd files, mined codes). Each
size is then monitored in a fresh process (default settings: GX checkpoint on a 20k-row sample, no labels; and
once with labels for every row), which reports its wall time and peak RSS (``ru_maxrss``) next to the RSS it had
after its imports, so the growth with the window's size is visible.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_monitor.py --rows 100000,1000000 --dir /tmp/bench-monitor

``--ml1m DATASETS_DIR`` instead runs the planted-drift check on ML-1M (users 1–2999): the time split's test
period replayed clean, with the 35+ domain's share raised, and with 30% unseen movie ids.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

T0_MS = 1_796_083_200_000  # 2026-12-01T00:00Z


def generate(root: Path, rows: int) -> None:
    """Write ``root/prepared`` (once) and ``root/log-<rows>`` (+ ``labels-<rows>.parquet``)."""
    import numpy as np
    import pandas as pd

    from mdctr.data.prepare import write_prepared
    from mdctr.data.synthetic import generate as synth
    from mdctr.monitoring.replay import request_ids, write_log

    options = dict(num_sparse=6, num_dense=1, vocab_size=4000, num_domains=3, seed=11)
    if not (root / "prepared").is_dir():
        write_prepared(synth(rows=200_000, **options), root / "prepared")
    log = root / f"log-{rows}"
    if log.is_dir():
        return
    loaded = synth(rows=rows, sample_seed=99, **options)
    table = loaded.table
    rng = np.random.default_rng(0)
    served = T0_MS + np.sort(rng.integers(0, 86_400_000, rows))
    pred = rng.uniform(0.01, 0.99, rows)
    mined = table["f0"].to_numpy().astype(np.int64) % 8
    files = write_log(
        table,
        loaded.schema,
        log,
        served_ms=served,
        prediction=pred,
        mined=mined,
        rows_per_file=50_000,
    )
    ids = request_ids(files)
    pd.DataFrame({"mdctr_request_id": ids, "label": table["label"].to_numpy()}).to_parquet(
        root / f"labels-{rows}.parquet"
    )


def run_one(root: Path, rows: int, labels: bool) -> dict:
    """Monitor ``log-<rows>`` in this process; return seconds and RSS (MiB)."""
    from mdctr.monitoring.logsource import Window
    from mdctr.monitoring.run import MonitorConfig, build_reference, monitor
    from mdctr.validation import gate  # noqa: F401  (GX's own import cost is not the window's)

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = MonitorConfig()
    t0 = time.perf_counter()
    ref = build_reference(root / "prepared", cfg)
    t1 = time.perf_counter()
    result = monitor(
        Window(str(root / f"log-{rows}")),
        ref,
        cfg,
        labels_path=root / f"labels-{rows}.parquet" if labels else None,
        validation_dir=root / f"gx-{rows}",
    )
    t2 = time.perf_counter()
    return {
        "rows": result.rows,
        "labels": labels,
        "reference_s": round(t1 - t0, 2),
        "window_s": round(t2 - t1, 2),
        "rss_after_imports_mib": round(base_rss),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "breaches": len(result.breaches),
    }


def ml1m_check(root: Path, datasets: Path, split: str) -> list[dict]:
    """ML-1M (users 1–2999), ``split`` random or time: replay the test split as a log (served at its own
    timestamps), clean and with planted drift (the 35+ domain's rows 3× as likely; 30% of movie ids unseen);
    monitor each against the train split."""
    import numpy as np

    from mdctr.data import load_dataset
    from mdctr.data.encode import split_table
    from mdctr.data.prepare import write_prepared
    from mdctr.monitoring.logsource import Window
    from mdctr.monitoring.replay import write_log
    from mdctr.monitoring.run import MonitorConfig, build_reference, monitor

    loaded = load_dataset("ml-1m", datasets / "ml-1m")
    sch = loaded.schema
    prepared = root / f"ml1m-{split}-prepared"
    if not prepared.is_dir():
        write_prepared(loaded, prepared, split=split)
    test = split_table(loaded.table, sch, kind=split)["test"]
    rng = np.random.default_rng(0)
    w = np.where(test[sch.domain].to_numpy() == 2, 3.0, 1.0)
    shifted = test.iloc[rng.choice(len(test), len(test), p=w / w.sum())].reset_index(drop=True)
    flood = test.copy()
    new = rng.random(len(flood)) < 0.3
    flood.loc[new, "movie_id"] = 100_000 + np.arange(int(new.sum()))
    cfg = MonitorConfig()
    ref = build_reference(prepared, cfg)
    out = []
    for name, table in (("clean replay", test), ("35+ share tripled", shifted), ("unseen movie ids", flood)):
        log = root / f"ml1m-{split}-log-{name.split()[0]}"
        if not log.is_dir():
            served = table[sch.time].to_numpy().astype(np.int64) * 1000
            write_log(table, sch, log, served_ms=served, prediction=rng.uniform(size=len(table)))
        t0 = time.perf_counter()
        r = monitor(Window(str(log)), ref, cfg, validation_dir=root / f"ml1m-{split}-gx")
        out.append(
            {
                "split": split,
                "window": name,
                "rows": r.rows,
                "seconds": round(time.perf_counter() - t0, 2),
                "domain_psi": round(r.handcrafted.psi, 4),
                "max_feature_psi": round(max(f.psi for f in r.features), 4),
                "oov_movie_id": round(next(f.oov_share for f in r.features if f.feature == "movie_id"), 4),
                "valid_oov_movie_id": round(ref.baseline_oov["movie_id"], 4),
                "breaches": list(r.breaches),
            }
        )
        print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bench-monitor"))
    ap.add_argument("--ml1m", type=Path, default=None, help="datasets dir: run the ML-1M planted-drift check")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--labels", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.generate:
        generate(args.dir, args.generate)
        return
    if args.ml1m:
        for split in ("random", "time"):
            ml1m_check(args.dir, args.ml1m, split)
        return
    if args.one:
        print(json.dumps(run_one(args.dir, args.one, args.labels)))
        return
    results = []
    for rows in (int(x) for x in args.rows.split(",")):
        me = [sys.executable, __file__, "--dir", str(args.dir)]
        subprocess.run([*me, "--generate", str(rows)], check=True)
        for labels in (False, True):
            out = subprocess.run(
                [*me, "--one", str(rows), *(["--labels"] if labels else [])],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}\n"
    )
    print("| logged rows | labels | reference (s) | window (s) | RSS after imports (MiB) | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['rows']:,} | {'yes' if r['labels'] else 'no'} | {r['reference_s']} | {r['window_s']} | "
            f"{r['rss_after_imports_mib']} | {r['peak_rss_mib']} |"
        )


if __name__ == "__main__":
    main()
