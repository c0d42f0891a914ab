"""Connection-level limits of ``mdctr serve`` on a real port (issue 22, item 2), plus the small protocol fixes of
item 6: a slow body or slow headers are cut off (408) at their deadline, an idle socket is closed after the
keep-alive timeout, oversized or too many headers are refused (431), health probes answer while the connection
cap is reached (other requests on new connections get a fast 503), ``HEAD /ping``, duplicate Content-Type, a
wrong model version, and v2 datatypes that hold the data."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from mdctr.serving import Predictor, ProcessServer
from mdctr.serving.app import ENV_PREFIX, ScoringApp, ServeLimits
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.serving.server import serve_command

pytestmark = pytest.mark.integration
NAME = "mdctr-demo"
INFER = f"/v2/models/{NAME}/infer"
LIMITS = ServeLimits(
    header_timeout=1.0,
    body_timeout=1.0,
    keep_alive_timeout=1.5,
    max_header_bytes=8 * 1024,
    max_headers=20,
    max_connections=64,
)
#: the cap test holds sockets open for a while: idle connections must outlive it on a busy machine
CAPPED = ServeLimits(keep_alive_timeout=60.0, max_connections=16)


@pytest.fixture(scope="module")
def server(serve_demo: Callable[[ServeLimits], ProcessServer]) -> ProcessServer:
    return serve_demo(LIMITS)


@pytest.fixture(scope="module")
def capped(serve_demo: Callable[[ServeLimits], ProcessServer]) -> ProcessServer:
    return serve_demo(CAPPED)


def _connect(server: ProcessServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout`` passes: then fail)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    """One whole response (status line, headers, Content-Length body) from ``sock``."""
    sock.settimeout(10)
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head = raw.partition(b"\r\n\r\n")[0]
    length = int(
        next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    )
    while len(raw.partition(b"\r\n\r\n")[2]) < length:
        raw += sock.recv(65536)
    return _status_and_body(raw)


def _request(server: ProcessServer, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    with _connect(server) as s:
        s.sendall(head + body)
        return _read_response(s)


def _rows(demo: DemoBundle, n: int = 1) -> pd.DataFrame:
    return demo.table[list(DEMO_SCHEMA.serving_columns)].head(n)


def _v2_body(rows: pd.DataFrame, **datatypes: str) -> bytes:
    types = {"user_id": "INT64", "item_id": "INT64", "gender": "BYTES", "age": "FP64", "domain": "INT64"}
    types.update(datatypes)
    n = len(rows)
    inputs = [{"name": c, "shape": [n], "datatype": types[c], "data": rows[c].tolist()} for c in rows.columns]
    return json.dumps({"inputs": inputs}).encode()


def test_a_slow_body_is_cut_off_after_the_body_timeout(server: ProcessServer) -> None:
    with _connect(server) as s:
        s.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
        )
        start = time.monotonic()
        s.settimeout(0.25)
        raw = b""
        for _ in range(40):  # one byte every 0.25 s: 10 s if never cut
            try:
                s.sendall(b" ")
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            raw += chunk
            if not chunk:
                break
        elapsed = time.monotonic() - start
    status, body = _status_and_body(raw)
    assert status == 408 and body["error"] == "request body not received within 1 s"
    assert 0.9 <= elapsed <= 5.0, elapsed


def test_unfinished_headers_are_cut_off_after_the_header_timeout(server: ProcessServer) -> None:
    with _connect(server) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        s.settimeout(0.25)
        raw = b""
        for i in range(40):  # a header line every 0.25 s, never the blank line
            try:
                s.sendall(f"X-{i}: y\r\n".encode())
                raw += s.recv(65536)
                break
            except TimeoutError:
                continue
        raw += _read_until_closed(s)
        elapsed = time.monotonic() - start
    status, body = _status_and_body(raw)
    assert status == 408 and body["error"] == "request headers not received within 1 s"
    assert 0.9 <= elapsed <= 5.0, elapsed


@pytest.mark.parametrize("after_a_request", [False, True])
def test_an_idle_socket_is_closed_after_the_keep_alive_timeout(
    server: ProcessServer, after_a_request: bool
) -> None:
    with _connect(server) as s:
        if after_a_request:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s) == (200, {"live": True})
        start = time.monotonic()
        assert _read_until_closed(s) == b""  # closed with nothing sent
        elapsed = time.monotonic() - start
    assert 1.4 <= elapsed <= 5.0, elapsed


def test_an_oversized_header_is_refused(server: ProcessServer) -> None:
    with _connect(server) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            for _ in range(1024):  # up to 64 MB, never finishing the header
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = _read_until_closed(s)
    assert sent < 16 * 1024 * 1024, f"the server kept reading {sent} header bytes"
    status, body = _status_and_body(raw)
    assert status == 431 and "request line and headers exceed 8192 bytes" in body["error"]


def test_too_many_headers_are_refused(server: ProcessServer) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(25))
    status, body = _request(server, head + b"\r\n")
    assert status == 431 and body["error"] == "more than 20 header fields (--max-headers)"
    status, _ = _request(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-1: y\r\n\r\n")
    assert status == 200


def test_health_probes_answer_while_the_connection_cap_is_reached(
    capped: ProcessServer, demo: DemoBundle
) -> None:
    body = _v2_body(_rows(demo))
    post = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    before = _connect(capped)  # a client connected before the flood keeps being served
    idle = [_connect(capped) for _ in range(20)]  # over the cap of 16
    try:
        time.sleep(0.3)  # let the server accept them all
        for path in ("/v2/health/live", "/v2/health/ready", "/ping", f"/v2/models/{NAME}/ready"):
            status, _ = _request(capped, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert status == 200, path
        start = time.monotonic()
        status, answer = _request(capped, post)
        assert status == 503 and "connection cap (16 per worker)" in answer["error"]
        assert time.monotonic() - start < 1.0  # refused at once, not after a timeout
        before.sendall(post)
        assert _read_response(before)[0] == 200
        start = time.monotonic()
        assert (
            _read_until_closed(idle[-1]) == b""
        )  # over the cap: closed after 1 s idle, not the 60 s keep-alive
        assert time.monotonic() - start < 5.0
    finally:
        for s in [before, *idle]:
            s.close()


def test_head_ping_and_duplicate_content_type(server: ProcessServer, demo: DemoBundle) -> None:
    with _connect(server) as s:
        s.sendall(b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # headers only
    body = _v2_body(_rows(demo))
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    status, answer = _request(server, head, body)
    assert status == 400 and answer["error"] == "more than one Content-Type header; send exactly one"


def test_narrow_v2_datatypes_that_hold_the_data_are_accepted(server: ProcessServer, demo: DemoBundle) -> None:
    """INT16 ids, INT8 ages, FP32 — the datatype only has to hold the values; predictions are unchanged."""
    rows = _rows(demo, 3)
    rows = rows.assign(age=rows["age"].round().astype(int))  # whole ages, so that INT8 can hold them
    expected = Predictor.load(demo.path).predict(rows)
    for types in ({}, {"age": "INT8", "domain": "UINT8"}, {"age": "FP32", "user_id": "INT32"}):
        body = _v2_body(rows, **types)
        head = (
            f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        status, answer = _request(server, head, body)
        assert status == 200, (types, answer)
        np.testing.assert_array_equal(np.asarray(answer["outputs"][0]["data"]), expected, err_msg=str(types))


def test_a_wrong_version_names_the_served_version(demo: DemoBundle) -> None:
    """In-process: a server of version 3 asked for version 4 says which version it serves."""
    app = ScoringApp(Predictor.load(demo.path), model_name=NAME, model_version="3")
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    for path in (f"/v2/models/{NAME}/versions/4/infer", f"/v2/models/{NAME}/versions/4"):
        sent.clear()
        scope = {"type": "http", "method": "GET", "path": path, "headers": []}
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 404
        assert json.loads(sent[1]["body"])["error"] == (
            f"model '{NAME}' has no version '4'; this server serves version '3'"
        )
    sent.clear()
    asyncio.run(
        app({"type": "http", "method": "GET", "path": f"/v2/models/{NAME}/versions/3"}, receive, send)
    )
    assert sent[0]["status"] == 200


def test_every_limit_travels_by_flag_and_by_environment() -> None:
    limits = ServeLimits(max_header_bytes=1234, header_timeout=2.5, max_connections=77, backlog=99)
    assert ServeLimits.from_env(limits.to_env()) == limits
    cmd = serve_command("m", port=1, limits=limits)
    for flag, value in [("--max-header-bytes", "1234"), ("--header-timeout", "2.5"), ("--backlog", "99")]:
        assert cmd[cmd.index(flag) + 1] == value
    with pytest.raises(ValueError, match="MDCTR_SERVE_BODY_TIMEOUT='soon' is not a valid float"):
        ServeLimits.from_env({f"{ENV_PREFIX}BODY_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="serve limit max_headers must be > 0; got 0"):
        ServeLimits(max_headers=0)


def test_serve_cli_takes_every_limit(demo: DemoBundle) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    cmd = serve_command(str(demo.path), port=5123, limits=LIMITS)
    args = cmd[cmd.index("serve") :] + ["--dry-run"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, ["serve", "--dry-run", "--model-uri", str(demo.path)], env={f"{ENV_PREFIX}MAX_HEADERS": "0"}
    )
    assert res.exit_code == 2 and "max-headers" in res.output


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """At a soft limit of 1,024 a worker stops accepting around 1,000 connections, below max_connections."""
    code = (
        "import resource\n"
        "from mdctr.serving.server import raise_open_file_limit\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "soft, hard = raise_open_file_limit()\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft\n"
        "print(soft, hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    soft, hard = (int(x) for x in out.stdout.split())
    assert soft == hard or (hard == -1 and soft > 256), out.stdout
