"""Latency and throughput of the production server (``mdctr serve``, what the KServe predictor runs).

Starts ``mdctr serve`` on ``--model-uri`` (default: the champion; ``--demo`` trains and serves a tiny demo
bundle instead), then measures from a SECOND process (this script re-invoked with ``--client``) over
loopback, with Open Inference Protocol v2 requests (``/v2/models/<name>/infer``):

* sequential requests on one keep-alive connection, 1 row and 1,000 rows: p50 / p99 latency;
* ``--connections`` concurrent keep-alive connections (threads) sending 1-row requests for ``--seconds``:
  requests/s, p50 / p99, and the count of non-200 answers or failed requests.

    .venv/bin/python benchmarks/bench_serving.py --demo --out /tmp/serving.json   # dnn [256, 128], demo data
    .venv/bin/python benchmarks/bench_serving.py --tracking-uri sqlite:///$PWD/mlruns/mlflow.db
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_serving")


def _conn(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _stats(lat: list[float]) -> dict[str, float]:
    ms = np.array(lat) * 1000
    return {
        "requests": len(lat),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def sequential(url: str, path: str, body: bytes, requests: int) -> dict[str, float]:
    conn = _conn(url)
    for _ in range(20):  # warm-up: connection, first-call allocations
        assert _post(conn, path, body) == 200
    lat = []
    for _ in range(requests):
        t0 = time.perf_counter()
        status = _post(conn, path, body)
        lat.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"status {status}")
    conn.close()
    return _stats(lat)


def concurrent(url: str, path: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    lat: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = _conn(url)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                ok = _post(conn, path, body) == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = _conn(url)
            lat[i].append(time.perf_counter() - t0)
            errors[i] += not ok
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [x for per in lat for x in per]
    return {
        **_stats(flat),
        "connections": connections,
        "seconds": round(wall, 1),
        "requests_per_s": round(len(flat) / wall, 1),
        "errors": int(sum(errors)),
    }


def client(args: argparse.Namespace) -> dict:
    import psutil

    bodies = {n: (args.payload_dir / f"v2_{n}.json").read_bytes() for n in (1, 1000)}
    path = f"/v2/models/{args.model_name}/infer"
    split = (args.payload_dir / "split_1.json").read_bytes()
    server = psutil.Process(args.server_pid)
    phases = {
        "1_row": lambda: sequential(args.client, path, bodies[1], args.requests),
        "1000_rows": lambda: sequential(args.client, path, bodies[1000], max(args.requests // 5, 200)),
        "1_row_invocations": lambda: sequential(args.client, "/invocations", split, args.requests),
        "concurrent_1_row": lambda: concurrent(args.client, path, bodies[1], args.connections, args.seconds),
    }
    out = {}
    for name, run in phases.items():
        # the server's own CPU time per request: a cost that, unlike latency, other load on the machine
        # does not inflate (warm-up requests are included; they are ≤ 1% of a phase)
        cpu0 = sum(server.cpu_times()[:2])
        res = run()
        res["server_cpu_ms_per_request"] = round(
            (sum(server.cpu_times()[:2]) - cpu0) * 1000 / res["requests"], 3
        )
        out[name] = res
    return out


def _payloads(example, kinds: dict[str, str], out: Path) -> None:
    for n in (1, 1000):
        rows = example.iloc[np.arange(n) % len(example)].reset_index(drop=True)
        v2 = {
            "inputs": [
                {"name": c, "shape": [n], "datatype": kinds[c], "data": rows[c].tolist()}
                for c in rows.columns
            ]
        }
        (out / f"v2_{n}.json").write_text(json.dumps(v2))
        split = json.loads(rows.to_json(orient="split", index=False))
        (out / f"split_{n}.json").write_text(json.dumps({"dataframe_split": split}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-uri", default="models:/mdctr-ml-1m@champion")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--demo", action="store_true", help="Serve a demo bundle (no tracking store needed).")
    ap.add_argument("--hidden", default="256,128", help="Hidden widths of the --demo dnn (ML-1M's default).")
    ap.add_argument("--requests", type=int, default=2000, help="Sequential requests per size.")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0, help="Duration of the concurrent phase.")
    ap.add_argument("--workers", type=int, default=1, help="Server worker processes.")
    ap.add_argument(
        "--model-name", default="", help="v2 route name (default: the served bundle's registered model's)."
    )
    ap.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)  # internal: base URL, client mode
    ap.add_argument("--payload-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args)))
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mdctr.serving import Predictor, start_model_server
    from mdctr.serving.request import V2_ADVERTISED

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp_path = Path(tmp)
        if args.demo:
            from mdctr.serving.demo import make_demo_bundle

            hidden = tuple(int(h) for h in args.hidden.split(","))
            demo = make_demo_bundle(tmp_path / "bundle", hidden=hidden)
            model_uri, bundle = str(demo.path), demo.path
        else:
            from mdctr import tracking
            from mdctr.serving.bundle import bundle_dir_of
            from mdctr.tracking.pyfunc import download_model

            uri = tracking.configure(args.tracking_uri)
            local, _ = download_model(args.model_uri, tracking_uri=uri, dst=tmp_path / "model")
            model_uri, bundle = str(local), bundle_dir_of(local)
        pred = Predictor.load(bundle)
        if not args.model_name:  # what `mdctr serve` names a local bundle: its dataset's registered model
            from mdctr.tracking.names import registered_model_name

            args.model_name = registered_model_name(pred.spec.schema.name)
        table = None
        if args.demo:
            table = demo.table
        else:
            from mdctr import tracking

            table = tracking.load_input_example(uri, args.model_uri)
        example = table[list(pred.columns)]
        kinds = {c: V2_ADVERTISED[pred.parser.kinds[c]] for c in pred.columns}
        _payloads(example, kinds, tmp_path)
        t0 = time.perf_counter()
        server = start_model_server(model_uri, workers=args.workers, log_dir=tmp_path)
        startup = time.perf_counter() - t0
        try:
            cmd = [sys.executable, __file__, "--client", server.url, "--payload-dir", str(tmp_path),
                   "--server-pid", str(server.pid),
                   "--requests", str(args.requests), "--connections", str(args.connections),
                   "--seconds", str(args.seconds), "--model-name", args.model_name]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600 + args.seconds)
        finally:
            server.stop()
    report = {
        "server": "mdctr serve (uvicorn, plain ASGI app), v2 protocol",
        "model_uri": "demo bundle" if args.demo else args.model_uri,
        "model": pred.info.model_name,
        "model_config": pred.info.model_config,
        "server_start_s": round(startup, 1),
        "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "results": json.loads(out.stdout),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
