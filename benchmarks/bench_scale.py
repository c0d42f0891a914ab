"""Scaling: train samples/s and peak RSS of the training process, streaming vs in-memory, dnn and hamur.

Synthetic encoded data is written chunk by chunk (the generator never holds the whole split either) as one
``train.parquet`` with row groups of ``--row-group`` rows, plus small valid/test splits. Every (size, model,
mode) trains one epoch in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py --rows 1000000 --out runs/bench_scale
    # the issue's full table (not run on the 2-core development machine):
    .venv/bin/python benchmarks/bench_scale.py --rows 1000000,10000000,50000000 --out runs/bench_scale
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

import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 500_000
MODELS = {"dnn": "none", "hamur": "handcrafted"}


def write_data(out: Path, rows: int, row_group: int) -> None:
    """``train.parquet`` (``rows`` rows) + valid/test (50k each) + feature_spec.json, chunk by chunk."""
    from mdctr.data.encode import FeatureSpec
    from mdctr.data.prepare import SPEC_FILE
    from mdctr.data.synthetic import generate

    if (out / "train.parquet").is_file() and pq.read_metadata(out / "train.parquet").num_rows == rows:
        return
    out.mkdir(parents=True, exist_ok=True)
    first = generate(rows=min(rows, CHUNK), num_sparse=4, num_dense=2, vocab_size=1000, num_domains=4, seed=0)
    # every chunk and split shares seed 0's structure (what there is to learn); only the rows differ
    spec = FeatureSpec.fit(first.table, first.schema)
    spec.save(out / SPEC_FILE)
    for name, n, seed in (("valid", 50_000, 10_001), ("test", 50_000, 10_002)):
        t = generate(
            rows=n, num_sparse=4, num_dense=2, vocab_size=1000, num_domains=4, seed=0, sample_seed=seed
        ).table
        spec.encode_frame(t, source=name).to_parquet(out / f"{name}.parquet", index=False)
    writer = None
    done, chunk_seed = 0, 0
    while done < rows:
        n = min(CHUNK, rows - done)
        table = (
            first.table
            if chunk_seed == 0 and n == len(first.table)
            else generate(
                rows=n,
                num_sparse=4,
                num_dense=2,
                vocab_size=1000,
                num_domains=4,
                seed=0,
                sample_seed=chunk_seed,
            ).table
        )
        arrow = pa.Table.from_pandas(spec.encode_frame(table, source="train"), preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(out / ".train.parquet.tmp", arrow.schema)
        writer.write_table(arrow, row_group_size=row_group)
        done += n
        chunk_seed += 1
    assert writer is not None
    writer.close()
    (out / ".train.parquet.tmp").replace(out / "train.parquet")


def child(data: Path, model_name: str, mode: str, batch_size: int, device: str = "cpu") -> dict:
    """Train one epoch (one process: its ru_maxrss is this configuration's peak RSS)."""
    import pandas as pd
    import torch

    from mdctr.data.encode import FeatureSpec
    from mdctr.data.prepare import SPEC_FILE
    from mdctr.data.stream import ParquetStream
    from mdctr.data.tensors import TensorData
    from mdctr.models.base import ModelInputs
    from mdctr.routing import DomainRouting
    from mdctr.training import TrainConfig
    from mdctr.training.trainer import fit

    spec = FeatureSpec.load(data / SPEC_FILE)
    valid = TensorData.from_frame(pd.read_parquet(data / "valid.parquet"), spec.schema)
    config = TrainConfig(epochs=1, batch_size=batch_size, seed=0, device=device, streaming=mode == "stream")
    routing = DomainRouting.for_model(model_name, MODELS[model_name])
    if mode == "stream":
        train = ParquetStream(
            data / "train.parquet",
            spec.schema,
            batch_size=batch_size,
            window_rows=config.stream_window_rows,
            seed=0,
            domain_fn=routing.domains,
        )
    else:
        full = TensorData.from_frame(pd.read_parquet(data / "train.parquet"), spec.schema)
        train = full.with_domain(routing.domains(full))
    valid = valid.with_domain(routing.domains(valid))
    num_domains = spec.schema.num_domains if MODELS[model_name] == "handcrafted" else 1
    torch.manual_seed(0)
    model = routing.build(ModelInputs(tuple(spec.vocab_sizes), spec.num_dense, num_domains, 16))
    t0 = time.perf_counter()
    result = fit(model, train, valid, config)
    return {
        "rows": len(train),
        "model": model_name,
        "mode": mode,
        "train_samples_per_s": result.train_samples_per_s,
        "valid_auc": result.best_valid_auc,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": torch.cuda.get_device_name(0) if config.resolve_device().type == "cuda" else "cpu",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000", help="comma-separated train sizes")
    ap.add_argument("--models", default="dnn,hamur")
    ap.add_argument("--modes", default="memory,stream")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--row-group", type=int, default=65536)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the process's peak RSS is host memory)")
    ap.add_argument("--data-only", action="store_true", help="write the datasets, train nothing")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_scale"))
    ap.add_argument("--child", nargs=3, metavar=("DATA", "MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        data, model_name, mode = args.child
        print(json.dumps(child(Path(data), model_name, mode, args.batch_size, args.device)))
        return

    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        data = args.out / f"data-{rows}"
        t0 = time.perf_counter()
        write_data(data, rows, args.row_group)
        print(f"data {rows:,} rows ready in {time.perf_counter() - t0:.0f}s", flush=True)
        if args.data_only:
            continue
        for model_name in args.models.split(","):
            for mode in args.modes.split(","):
                cmd = [
                    sys.executable,
                    __file__,
                    "--batch-size",
                    str(args.batch_size),
                    "--device",
                    args.device,
                ]
                cmd += ["--child", str(data)]
                proc = subprocess.run(
                    [*cmd, model_name, mode], capture_output=True, text=True, env={**os.environ}
                )
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"{model_name}/{mode} at {rows} rows failed")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                print(
                    f"{rows:>11,} {model_name:<6} {mode:<7} {r['train_samples_per_s']:>10,.0f} samples/s "
                    f"peak RSS {r['peak_rss_mb']:>8,.0f} MB  valid AUC {r['valid_auc']:.4f}",
                    flush=True,
                )
                meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
                (args.out / "results.json").write_text(json.dumps(meta | {"results": results}, indent=2))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
