"""Serving latency and throughput of the MLflow scoring server on a registered model.

Starts ``mlflow models serve`` on ``--model-uri`` (default: the champion), then measures from a SECOND process
(this script re-invoked with ``--client``) over loopback: per request size, latency p50/p99 and rows/s, bounded
by ``--requests`` and ``--seconds`` per size. Rows are the model's stored input example, repeated to size.

    .venv/bin/python benchmarks/bench_serving.py --tracking-uri sqlite:///$PWD/mlruns/mlflow.db
    .venv/bin/python benchmarks/bench_serving.py --demo            # a tiny demo model in a temporary store
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_serving")


def client(url: str, payload_dir: Path, sizes: list[int], max_requests: int, max_seconds: float) -> dict:
    """The load loop (runs in its own process): sequential requests on one keep-alive connection."""
    import requests

    session = requests.Session()
    headers = {"Content-Type": "application/json"}
    results = {}
    for size in sizes:
        body = (payload_dir / f"rows_{size}.json").read_bytes()
        for _ in range(5):  # warm-up: connection, first-call allocations
            session.post(url, data=body, headers=headers, timeout=60).raise_for_status()
        lat = []
        start = time.perf_counter()
        while len(lat) < max_requests and time.perf_counter() - start < max_seconds:
            t0 = time.perf_counter()
            r = session.post(url, data=body, headers=headers, timeout=60)
            lat.append(time.perf_counter() - t0)
            r.raise_for_status()
        wall = time.perf_counter() - start
        ms = np.array(lat) * 1000
        results[str(size)] = {
            "requests": len(lat),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
            "rows_per_s": round(size * len(lat) / wall, 1),
        }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-uri", default="models:/mdctr-ctr@champion")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--demo", action="store_true", help="Register and promote a tiny demo model first.")
    ap.add_argument("--sizes", default="1,1000", help="Rows per request, comma-separated.")
    ap.add_argument("--requests", type=int, default=500, help="Max requests per size.")
    ap.add_argument("--seconds", type=float, default=30.0, help="Max seconds per size.")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers of the model server.")
    ap.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)  # internal: URL, client mode
    ap.add_argument("--payload-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.client:
        print(json.dumps(client(args.client, args.payload_dir, sizes, args.requests, args.seconds)))
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mdctr import tracking
    from mdctr.serving import start_model_server

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp_path = Path(tmp)
        uri = args.tracking_uri
        if args.demo:
            from mdctr.serving.demo import make_demo_bundle

            uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
            demo = make_demo_bundle(tmp_path / "bundle")
            parent = tracking.start_parent_run(uri, run_name="bench-serving")
            run_id = tracking.log_training_run(uri, parent, run_name="demo", params={}, system_metrics=False)
            rv = tracking.register_bundle(uri, demo.path, run_id=run_id, input_example=demo.table)
            tracking.promote(uri, rv.version)
        uri = tracking.configure(uri)
        example = tracking.load_input_example(uri, args.model_uri)
        for size in sizes:
            rows = example.iloc[np.arange(size) % len(example)].reset_index(drop=True)
            split = json.loads(rows.to_json(orient="split", index=False))
            (tmp_path / f"rows_{size}.json").write_text(json.dumps({"dataframe_split": split}))
        t0 = time.perf_counter()
        server = start_model_server(args.model_uri, tracking_uri=uri, workers=args.workers, log_dir=tmp_path)
        startup = time.perf_counter() - t0
        try:
            cmd = [sys.executable, __file__, "--client", f"{server.url}/invocations", "--payload-dir", str(tmp_path),
                   "--sizes", args.sizes, "--requests", str(args.requests), "--seconds", str(args.seconds)]  # fmt: skip
            out = subprocess.run(
                cmd, capture_output=True, text=True, check=True, timeout=60 + 2 * len(sizes) * args.seconds
            )
        finally:
            server.stop()
    report = {
        "model_uri": args.model_uri,
        "server_start_s": round(startup, 1),
        "workers": args.workers,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "by_rows_per_request": json.loads(out.stdout),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
