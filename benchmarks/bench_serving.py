"""Latency and throughput of the production server (``mdctr serve``, what the KServe predictor runs).

Starts ``mdctr serve`` on ``--model-uri`` (default: the champion; ``--demo`` trains and serves a tiny demo
bundle instead), then measures from a SECOND process (this script re-invoked with ``--client``) over
loopback, with Open Inference Protocol v2 requests (``/v2/models/<name>/infer``):

* sequential requests on one keep-alive connection, 1 row and 1,000 rows: p50 / p99 latency;
* ``--connections`` concurrent keep-alive connections (threads) sending 1-row requests for ``--seconds``:
  requests/s, p50 / p99, and the count of non-200 answers or failed requests.

With ``--log DIR_OR_S3_URI [--log-sample RATE]`` the same phases run twice in one invocation, against a server
with the served-request log off and one with it on (``mdctr serve --log``), ``--rounds`` times alternately, and
the report adds the on/off ratios and the log's counters (rows logged and dropped, files, bytes on disk).

    .venv/bin/python benchmarks/bench_serving.py --demo --out /tmp/serving.json   # dnn [256, 128], demo data
    .venv/bin/python benchmarks/bench_serving.py --tracking-uri sqlite:///$PWD/mlruns/mlflow.db
    .venv/bin/python benchmarks/bench_serving.py --demo --log /tmp/reqlog --log-sample 1.0 --out /tmp/log.json
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
from typing import Any

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


def _run_phases(model_uri: str, args: argparse.Namespace, tmp_path: Path, request_log: Any) -> dict[str, Any]:
    """Start ``mdctr serve`` (with ``request_log`` settings or none), run the client phases from a second
    process, read the log's counters, stop the server (which flushes the log)."""
    import requests

    from mdctr.serving import start_model_server

    t0 = time.perf_counter()
    server = start_model_server(model_uri, workers=args.workers, log_dir=tmp_path, request_log=request_log)
    startup = time.perf_counter() - t0
    try:
        cmd = [sys.executable, __file__, "--client", server.url, "--payload-dir", str(tmp_path),
               "--server-pid", str(server.pid),
               "--requests", str(args.requests), "--connections", str(args.connections),
               "--seconds", str(args.seconds), "--model-name", args.model_name]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600 + args.seconds)
        stats = requests.get(f"{server.url}/v2/requestlog", timeout=10).json()
    finally:
        server.stop()
    return {"server_start_s": round(startup, 1), "results": json.loads(out.stdout), "request_log": stats}


def _ratios(off: dict[str, Any], on: dict[str, Any]) -> dict[str, dict[str, float]]:
    """on ÷ off per phase, for latency, throughput and the server's CPU time per request."""
    keys = ("p50_ms", "p99_ms", "mean_ms", "requests_per_s", "server_cpu_ms_per_request")
    return {
        phase: {k: round(on[phase][k] / off[phase][k], 3) for k in keys if k in off[phase] and off[phase][k]}
        for phase in off
    }


def _log_summary(uri: str) -> dict[str, Any]:
    from mdctr.serving.requestlog import is_s3, log_files

    files = log_files(uri)
    size = None if is_s3(uri) else sum(Path(f).stat().st_size for f in files)
    return {"uri": uri, "files": len(files), "bytes": size}


def _model(args: argparse.Namespace, tmp_path: Path) -> tuple[str, Any, Any]:
    """The model to serve: (model URI for ``mdctr serve``, its Predictor, a table of example rows)."""
    from mdctr.serving import Predictor

    if args.demo:
        from mdctr.serving.demo import make_demo_bundle

        hidden = tuple(int(h) for h in args.hidden.split(","))
        demo = make_demo_bundle(tmp_path / "bundle", hidden=hidden)
        return str(demo.path), Predictor.load(demo.path), demo.table
    from mdctr import tracking
    from mdctr.serving.bundle import bundle_dir_of
    from mdctr.tracking.pyfunc import download_model

    uri = tracking.configure(args.tracking_uri)
    local, _ = download_model(args.model_uri, tracking_uri=uri, dst=tmp_path / "model")
    table = tracking.load_input_example(uri, args.model_uri)
    return str(local), Predictor.load(bundle_dir_of(local)), table


def _parser() -> argparse.ArgumentParser:
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
    ap.add_argument(
        "--log", default="", help="Also run with the served-request log on, to this DIR or s3:// URI."
    )
    ap.add_argument("--log-sample", type=float, default=1.0, help="Share of requests logged with --log.")
    ap.add_argument("--rounds", type=int, default=1, help="With --log: off/on pairs, run alternately.")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)  # internal: base URL, client mode
    ap.add_argument("--payload-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = _parser().parse_args()
    if args.log and not args.client:
        from mdctr.serving.requestlog import log_files

        if log_files(args.log):  # the report counts the files under --log: they must all be this run's
            raise SystemExit(f"--log {args.log} already holds log files; give an empty destination")
    if args.client:
        print(json.dumps(client(args)))
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mdctr.serving.request import V2_ADVERTISED
    from mdctr.serving.requestlog import RequestLogSettings

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp_path = Path(tmp)
        model_uri, pred, table = _model(args, tmp_path)
        if not args.model_name:  # what `mdctr serve` names a local bundle: its dataset's registered model
            from mdctr.tracking.names import registered_model_name

            args.model_name = registered_model_name(pred.spec.schema.name)
        example = table[list(pred.columns)]
        kinds = {c: V2_ADVERTISED[pred.parser.kinds[c]] for c in pred.columns}
        _payloads(example, kinds, tmp_path)
        if not args.log:
            runs = [("off", _run_phases(model_uri, args, tmp_path, None))]
        else:
            settings = RequestLogSettings(uri=args.log, sample=args.log_sample)
            runs = []
            for _ in range(args.rounds):
                runs.append(("off", _run_phases(model_uri, args, tmp_path, None)))
                runs.append(("on", _run_phases(model_uri, args, tmp_path, settings)))
    report = {
        "server": "mdctr serve (uvicorn, plain ASGI app), v2 protocol",
        "model_uri": "demo bundle" if args.demo else args.model_uri,
        "model": pred.info.model_name,
        "model_config": pred.info.model_config,
        "server_start_s": runs[0][1]["server_start_s"],
        "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": runs[0][1]["results"],
    }
    if args.log:
        report["request_log"] = {"sample": args.log_sample, **_log_summary(args.log)}
        report["rounds"] = [
            {
                "log": mode,
                "results": run["results"],
                **({"counters": run["request_log"]} if mode == "on" else {}),
            }
            for mode, run in runs
        ]
        report["ratios_on_over_off"] = [
            _ratios(runs[i][1]["results"], runs[i + 1][1]["results"]) for i in range(0, len(runs), 2)
        ]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
