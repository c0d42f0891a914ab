"""Hostile connections against ``mdctr serve`` (issue 22, item 2): do good requests still get through?

Starts the production server (``mdctr serve``: uvicorn + :mod:`mdctr.serving.protocol`, 1 worker, the default
:class:`mdctr.serving.app.ServeLimits`) on a demo bundle on 127.0.0.1, then runs each attack from a child
process for ``--seconds`` while this process sends good 1-row v2 requests (a new connection each, paced at
``--rate`` per second) and samples the server's RSS:

* ``slow body``: 64 clients announce a 1 MB body and send one byte every 4 s;
* ``idle sockets``: 1,100 connections, half sending nothing, half an unfinished request line; each reconnects
  as soon as the server closes it;
* ``connection flood``: 2,000 connections opened at once (held, reopened when closed);
* ``100 MB headers``: 10 clients each sending a header of up to 100 MB, reconnecting when cut off;
* ``/live under 10k-row load``: 4 clients sending 10,000-row requests back to back while the probe
  ``GET /v2/health/live`` is timed (sizes the KServe probe timeout).

Everything is bounded: fixed client counts, each phase ``--seconds`` long, every socket with a timeout, the
whole run under 3 minutes; loopback only; the server is stopped at the end.

    .venv/bin/python benchmarks/serving_attacks.py            # prints the table (markdown)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import multiprocessing as mp
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

log = logging.getLogger("serving_attacks")
HOST = "127.0.0.1"
GOAL_SUCCESS = 0.99
GOAL_P99_MS = 50.0
GOAL_RSS_RATIO = 1.2


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- attackers (run in a child process, one asyncio loop) -----------------------------------------------------
async def _connect(
    port: int, stats: dict[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """One connection to the server (counted), or None after a failed attempt and a short pause."""
    try:
        conn = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    except (OSError, TimeoutError):
        stats["connect_failed"] += 1
        await asyncio.sleep(0.1)
        return None
    stats["connected"] += 1
    return conn


async def _hold(port: int, first: bytes, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """Open a connection, send ``first`` (maybe nothing), wait until the server closes it; repeat until stop."""
    while not stop.is_set():
        conn = await _connect(port, stats)
        if conn is None:
            continue
        reader, writer = conn
        try:
            if first:
                writer.write(first)
            stopper = asyncio.ensure_future(stop.wait())
            reading = asyncio.ensure_future(reader.read(65536))
            await asyncio.wait({stopper, reading}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                stats["closed_by_server"] += 1
            stopper.cancel()
            reading.cancel()
        except OSError:
            stats["closed_by_server"] += 1
        finally:
            writer.close()


async def _slow_body(port: int, path: str, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """A POST announcing 1 MB, then one byte every 4 s, until the server answers or stop."""
    while not stop.is_set():
        conn = await _connect(port, stats)
        if conn is None:
            continue
        reader, writer = conn
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        try:
            while not stop.is_set():
                writer.write(b" ")
                try:
                    data = await asyncio.wait_for(reader.read(65536), 4.0)
                except TimeoutError:
                    continue
                stats["answered_by_server"] += 1
                if not data:
                    break
                break
        except OSError:
            pass
        finally:
            writer.close()


async def _big_header(port: int, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """Send a header value of up to 100 MB in 64 KiB pieces until the server cuts the connection; counts the
    bytes written before that (socket buffers of both kernels included, so more than the server read)."""
    piece = b"a" * 65536
    while not stop.is_set():
        conn = await _connect(port, stats)
        if conn is None:
            continue
        _, writer = conn
        sent = 0
        try:
            writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < 100 * 1024 * 1024 and not stop.is_set():
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), 5)
                sent += len(piece)
        except (OSError, TimeoutError):
            stats["cut_off"] += 1
        finally:
            stats["header_bytes_written_max"] = max(stats["header_bytes_written_max"], sent)
            writer.close()
        await asyncio.sleep(0.05)


def _load_10k(port: int, path: str, body: bytes, stop: threading.Event, stats: dict[str, int]) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    while not stop.is_set():
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        stats["ok" if r.status == 200 else "failed"] += 1


def attacker(kind: str, port: int, path: str, body: bytes, ready: Any, stop_flag: Any, out: Any) -> None:
    """Child process: run attack ``kind`` until ``stop_flag`` is set; put its counters on ``out``."""
    _raise_nofile()
    stats: dict[str, int] = {
        k: 0
        for k in (
            "connected",
            "connect_failed",
            "closed_by_server",
            "answered_by_server",
            "cut_off",
            "header_bytes_written_max",
            "ok",
            "failed",
        )
    }
    if kind == "load10k":
        stop = threading.Event()
        threads = [threading.Thread(target=_load_10k, args=(port, path, body, stop, stats)) for _ in range(4)]
        for t in threads:
            t.start()
        ready.set()
        stop_flag.wait()
        stop.set()
        for t in threads:
            t.join(60)
        out.put(stats)
        return

    async def main() -> None:
        stop = asyncio.Event()
        if kind == "slow_body":
            tasks = [_slow_body(port, path, stop, stats) for _ in range(64)]
        elif kind == "idle":
            tasks = [_hold(port, b"" if i % 2 else b"GET /v2/health/li", stop, stats) for i in range(1100)]
        elif kind == "flood":
            tasks = [_hold(port, b"", stop, stats) for _ in range(2000)]
        elif kind == "big_headers":
            tasks = [_big_header(port, stop, stats) for _ in range(10)]
        else:
            raise ValueError(kind)
        running = [asyncio.ensure_future(t) for t in tasks]
        await asyncio.sleep(1.0)  # let every connection open
        ready.set()
        while not stop_flag.is_set():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait(running, timeout=10)

    asyncio.run(main())
    out.put(stats)


# -- the good client ------------------------------------------------------------------------------------------
def good_requests(
    port: int, method: str, path: str, body: bytes, seconds: float, rate: float
) -> dict[str, Any]:
    """Paced requests, a new connection each: success rate and latency (ms) of the 200s."""
    lat: list[float] = []
    failures: dict[str, int] = {}
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    n = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += 1.0 / rate
        n += 1
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            conn.close()
            if r.status == 200 and data:
                lat.append(time.perf_counter() - t0)
            else:
                failures[str(r.status)] = failures.get(str(r.status), 0) + 1
        except (OSError, http.client.HTTPException) as e:
            failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {
        "requests": n,
        "ok": len(lat),
        "success": len(lat) / n if n else 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "failures": failures,
    }


def rss_mb(pid: int) -> float:
    """RSS of the server's process tree, MB."""
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 1e6


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._stop_ev = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop_ev.set()
        self.join(5)
        return self.peak


def run_phase(
    name: str, kind: str | None, port: int, pid: int, good: tuple[str, str, bytes], attack_body: bytes,
    infer: str, seconds: float, rate: float,
) -> dict[str, Any]:  # fmt: skip
    ctx = mp.get_context("spawn")
    ready, stop_flag, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = None
    if kind is not None:
        proc = ctx.Process(target=attacker, args=(kind, port, infer, attack_body, ready, stop_flag, out))
        proc.start()
        if not ready.wait(60):
            raise RuntimeError(f"{name}: attacker not ready within 60 s")
    sampler = RssSampler(pid)
    sampler.start()
    res = good_requests(port, *good, seconds=seconds, rate=rate)
    res["rss_peak_mb"] = sampler.stop()
    res["attack"] = name
    if proc is not None:
        stop_flag.set()
        try:
            res["attacker"] = out.get(timeout=30)
        except Exception:  # a stuck attacker must not hang the benchmark
            res["attacker"] = {}
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    log.info("%s: %s", name, res)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0, help="Length of each phase.")
    ap.add_argument("--rate", type=float, default=100.0, help="Good requests per second (paced).")
    ap.add_argument("--out", type=Path, help="Write the results as JSON here too.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _raise_nofile()

    from mdctr.serving.demo import DEMO_SCHEMA, make_demo_bundle
    from mdctr.serving.server import start_model_server

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mdctr-attacks-") as tmp:
        demo = make_demo_bundle(Path(tmp) / "bundle", hidden=(256, 128))  # ML-1M's default dnn widths
        rows = demo.table[list(DEMO_SCHEMA.serving_columns)]
        types = {"user_id": "INT64", "item_id": "INT64", "gender": "BYTES", "age": "FP64", "domain": "INT64"}

        def v2(df: Any) -> bytes:
            inputs = [
                {"name": c, "shape": [len(df)], "datatype": types[c], "data": df[c].tolist()}
                for c in df.columns
            ]
            return json.dumps({"inputs": inputs}).encode()

        one_row = v2(rows.head(1))
        big = v2(rows.sample(10_000, replace=True, random_state=0))
        srv = start_model_server(str(demo.path), log_dir=Path(tmp) / "srv")
        try:
            port = int(srv.url.rsplit(":", 1)[1])
            infer = "/v2/models/mdctr-demo/infer"
            post = ("POST", infer, one_row)
            for _ in range(50):  # warm-up
                good_requests(port, *post, seconds=0.02, rate=100)
            idle_rss = rss_mb(srv.pid)
            phases = [
                ("none (baseline)", None, post),
                ("64 slow-body clients", "slow_body", post),
                ("1,100 idle / unfinished sockets", "idle", post),
                ("2,000 connections at once", "flood", post),
                ("10 × 100 MB headers", "big_headers", post),
                ("/live under 4 × 10k-row requests", "load10k", ("GET", "/v2/health/live", b"")),
            ]
            results = [
                # the probe phase is sequential behind slow requests: twice as long for enough samples
                run_phase(
                    name,
                    kind,
                    port,
                    srv.pid,
                    good,
                    big,
                    infer,
                    args.seconds * (1 + (kind == "load10k")),
                    args.rate,
                )
                for name, kind, good in phases
            ]
        finally:
            srv.stop()
    total = time.monotonic() - started
    print(f"\nidle server RSS: {idle_rss:.0f} MB; whole run {total:.0f} s\n")
    print("| attack | good requests | success | p50 (ms) | p99 (ms) | max (ms) | peak RSS (MB) | attacker |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        a = r.get("attacker", {})
        note = ", ".join(f"{k} {v:,}" for k, v in a.items() if v) if a else ""
        fails = f" (failed: {r['failures']})" if r["failures"] else ""
        print(
            f"| {r['attack']} | {r['requests']:,} | {100 * r['success']:.1f}%{fails} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['rss_peak_mb']:.0f} ({r['rss_peak_mb'] / idle_rss:.2f}×) "
            f"| {note} |"
        )
    met = [
        r["success"] >= GOAL_SUCCESS and r["p99_ms"] <= GOAL_P99_MS
        for r in results[1:4]  # the three connection attacks
    ]
    rss_ok = results[4]["rss_peak_mb"] <= GOAL_RSS_RATIO * idle_rss
    print(
        f"\ngoals: ≥ {100 * GOAL_SUCCESS:.0f}% success and p99 ≤ {GOAL_P99_MS:.0f} ms under the three connection "
        f"attacks: {'met' if all(met) else 'NOT met'} ({met}); RSS ≤ {GOAL_RSS_RATIO}× idle under 100 MB "
        f"headers: {'met' if rss_ok else 'NOT met'}"
    )
    if args.out:
        args.out.write_text(json.dumps({"idle_rss_mb": idle_rss, "results": results}, indent=2))


if __name__ == "__main__":
    main()
