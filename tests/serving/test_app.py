"""The production server (``mdctr serve`` → uvicorn → ScoringApp) on a real port: the v2 protocol and
``/invocations`` give the offline predictions, ≥ 25 kinds of bad request each get their status and message
(and the next good request is still answered right), and the body/row/content-type/nesting limits hold."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import requests

from mdctr.serving import Predictor, ProcessServer
from mdctr.serving.app import ServeLimits
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.serving.server import free_port, venv_env, wait_healthy

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/json"}
#: ``mdctr serve`` names the v2 route after the bundle's dataset's registered model
NAME = "mdctr-demo"
LIMITS = ServeLimits(max_body_bytes=64 * 1024, max_rows=200)


@pytest.fixture(scope="module")
def server(serve_demo: Callable[[ServeLimits], ProcessServer]) -> ProcessServer:
    return serve_demo(LIMITS)


def _rows(demo: DemoBundle, n: int = 20, seed: int = 1) -> pd.DataFrame:
    cols = list(DEMO_SCHEMA.serving_columns)
    return demo.table[cols].sample(n, random_state=seed).reset_index(drop=True)


def _split(df: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": json.loads(df.to_json(orient="split", index=False))}


def _v2(df: pd.DataFrame) -> dict[str, Any]:
    types = {"user_id": "INT64", "item_id": "INT64", "gender": "BYTES", "age": "FP64", "domain": "INT64"}
    return {
        "id": "req-1",
        "inputs": [
            {"name": c, "shape": [len(df)], "datatype": types[c], "data": df[c].tolist()} for c in df.columns
        ],
    }


def test_v2_and_invocations_return_the_offline_predictions(server: ProcessServer, demo: DemoBundle) -> None:
    rows = _rows(demo, 150)
    offline = Predictor.load(demo.path).predict(rows)
    r = requests.post(f"{server.url}/v2/models/{NAME}/infer", json=_v2(rows), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == NAME and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "pctr" and out["datatype"] == "FP64" and out["shape"] == [150]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float64), offline)  # identical, not close
    r = requests.post(f"{server.url}/invocations", json=_split(rows), timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["predictions"], dtype=np.float64), offline)
    records = {"dataframe_records": json.loads(rows.head(3).to_json(orient="records"))}
    r = requests.post(f"{server.url}/invocations", json=records, timeout=30)
    np.testing.assert_array_equal(np.asarray(r.json()["predictions"]), offline[:3])


def test_health_and_metadata_routes(server: ProcessServer) -> None:
    assert requests.get(f"{server.url}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{server.url}/v2/models/{NAME}/ready", timeout=5).json()["ready"] is True
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    meta = requests.get(f"{server.url}/v2/models/{NAME}", timeout=5).json()
    assert meta["name"] == NAME
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("user_id", "INT64"),
        ("item_id", "INT64"),
        ("gender", "BYTES"),
        ("age", "FP64"),
        ("domain", "INT64"),
    ]
    assert meta["outputs"] == [{"name": "pctr", "datatype": "FP64", "shape": [-1]}]
    assert requests.get(f"{server.url}/v2", timeout=5).json()["name"] == "mdctr"


def _raw(url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One request with exactly these bytes and headers (requests would add a Content-Type or length)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _good(df: pd.DataFrame) -> dict[str, Any]:
    return _split(df)


def _with(df: pd.DataFrame, col: str, value: Any, row: int = 0) -> dict[str, Any]:
    body = _split(df)
    cols = body["dataframe_split"]["columns"]
    body["dataframe_split"]["data"][row][cols.index(col)] = value
    return body


def _v2_with(df: pd.DataFrame, name: str, **change: Any) -> dict[str, Any]:
    body = _v2(df)
    for t in body["inputs"]:
        if t["name"] == name:
            t.update(change)
    return body


INV = "/invocations"
INFER = f"/v2/models/{NAME}/infer"
J = {"Content-Type": "application/json"}
# (name, path, body maker (rows → bytes), headers, status, message fragment)
BadCase = tuple[str, str, Callable[[pd.DataFrame], bytes], dict[str, str], int, str]


def _b(f: Callable[[pd.DataFrame], Any]) -> Callable[[pd.DataFrame], bytes]:
    return lambda df: json.dumps(f(df)).encode()


BAD: list[BadCase] = [
    (
        "string for int id",
        INV,
        _b(lambda d: _with(d, "user_id", "5")),
        J,
        400,
        "'user_id' expects integer ids; found '5'",
    ),
    (
        "float for int id",
        INV,
        _b(lambda d: _with(d, "item_id", 1.9)),
        J,
        400,
        "'item_id' expects integer ids; found 1.9",
    ),
    (
        "bool for int id",
        INV,
        _b(lambda d: _with(d, "user_id", True)),
        J,
        400,
        "'user_id' expects integer ids; found True",
    ),
    (
        "integral float for id",
        INV,
        _b(lambda d: _with(d, "user_id", 5.0)),
        J,
        400,
        "'user_id' expects integer ids; found 5.0",
    ),
    (
        "null id",
        INV,
        _b(lambda d: _with(d, "user_id", None)),
        J,
        400,
        "'user_id' expects integer ids; found None",
    ),
    (
        "number for string column",
        INV,
        _b(lambda d: _with(d, "gender", 1)),
        J,
        400,
        "'gender' expects strings; found 1",
    ),
    (
        "unknown closed category",
        INV,
        _b(lambda d: _with(d, "gender", "X")),
        J,
        400,
        "'gender' has 1 unknown value(s), e.g. 'X'",
    ),
    (
        "string for dense",
        INV,
        _b(lambda d: _with(d, "age", "old")),
        J,
        400,
        "'age' expects numbers; found 'old'",
    ),
    (
        "bool for dense",
        INV,
        _b(lambda d: _with(d, "age", False)),
        J,
        400,
        "'age' expects numbers; found False",
    ),
    (
        "dense out of range",
        INV,
        _b(lambda d: _with(d, "age", 1e308)),
        J,
        400,
        "'age' has 1 value(s) out of range",
    ),
    (
        "infinity literal",
        INV,
        lambda d: json.dumps(_with(d, "age", 12345.678)).replace("12345.678", "Infinity").encode(),
        J,
        400,
        "not valid JSON",
    ),
    (
        "NaN literal",
        INV,
        lambda d: json.dumps(_with(d, "age", 12345.678)).replace("12345.678", "NaN").encode(),
        J,
        400,
        "not valid JSON",
    ),
    (
        "domain out of range",
        INV,
        _b(lambda d: _with(d, "domain", 7)),
        J,
        400,
        "'domain' must be one of 0..2; found 1 row(s) outside, e.g. 7",
    ),
    ("negative domain", INV, _b(lambda d: _with(d, "domain", -1)), J, 400, "'domain' must be one of 0..2"),
    (
        "string domain",
        INV,
        _b(lambda d: _with(d, "domain", "1")),
        J,
        400,
        "'domain' expects integer domain ids; found '1'",
    ),
    (
        "missing column",
        INV,
        _b(lambda d: _split(d.drop(columns=["age"]))),
        J,
        400,
        "missing column(s) ['age']",
    ),
    ("no rows", INV, _b(lambda d: _split(d.head(0))), J, 400, "no rows"),
    (
        "ragged row",
        INV,
        _b(lambda d: {"dataframe_split": {"columns": list(d.columns), "data": [[1, 2]]}}),
        J,
        400,
        "row 0 must be a list of 5 values",
    ),
    (
        "row not a list",
        INV,
        _b(lambda d: {"dataframe_split": {"columns": list(d.columns), "data": [7]}}),
        J,
        400,
        "row 0 must be a list",
    ),
    (
        "duplicate columns",
        INV,
        _b(lambda d: {"dataframe_split": {"columns": ["age", "age"], "data": [[1, 1]]}}),
        J,
        400,
        "duplicate names",
    ),
    (
        "unknown format key",
        INV,
        _b(lambda d: {"instances": [1]}),
        J,
        400,
        "expected exactly one of 'dataframe_split', 'dataframe_records'",
    ),
    ("top level list", INV, _b(lambda d: [1, 2]), J, 400, "expected a JSON object"),
    ("malformed json", INV, lambda d: b'{"dataframe_split": {"columns": [', J, 400, "not valid JSON"),
    ("empty body", INV, lambda d: b"", J, 400, "empty request body"),
    ("not utf-8", INV, lambda d: b'{"a": "\xff\xfe"}', J, 400, "not valid JSON"),
    (
        "deep nesting",
        INV,
        lambda d: b"[" * 100_000 + b"]" * 100_000,
        {"Content-Type": "application/json"},
        413,
        "exceeds the limit",
    ),
    ("deep nesting under the size limit", INV, lambda d: b"[" * 5000 + b"]" * 5000, J, 400, "not valid JSON"),
    ("missing content type", INV, _b(_good), {}, 415, "missing Content-Type"),
    (
        "wrong content type",
        INV,
        _b(_good),
        {"Content-Type": "text/csv"},
        415,
        "unsupported Content-Type 'text/csv'",
    ),
    (
        "too many rows",
        INV,
        _b(lambda d: _split(pd.concat([d] * 11, ignore_index=True))),
        J,
        413,
        "220 rows exceed the limit of 200",
    ),
    (
        "body too large",
        INV,
        lambda d: b'{"x": "' + b"a" * 70_000 + b'"}',
        J,
        413,
        "exceeds the limit of 65536 bytes",
    ),
    (
        "v2 wrong datatype",
        INFER,
        _b(lambda d: _v2_with(d, "user_id", datatype="FP32")),
        J,
        400,
        "input 'user_id' has datatype 'FP32'",
    ),
    (
        "v2 shape mismatch",
        INFER,
        _b(lambda d: _v2_with(d, "age", shape=[3])),
        J,
        400,
        "input 'age' has 20 value(s) but shape [3]",
    ),
    (
        "v2 bad shape",
        INFER,
        _b(lambda d: _v2_with(d, "age", shape=[20, 2])),
        J,
        400,
        "shape must be [N] or [N, 1]",
    ),
    (
        "v2 unknown input",
        INFER,
        _b(
            lambda d: {
                "inputs": [
                    *_v2(d)["inputs"],
                    {"name": "zip", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                ]
            }
        ),
        J,
        400,
        "unknown input 'zip'",
    ),
    (
        "v2 missing input",
        INFER,
        _b(lambda d: {"inputs": _v2(d)["inputs"][1:]}),
        J,
        400,
        "missing column(s) ['user_id']",
    ),
    (
        "v2 duplicate input",
        INFER,
        _b(lambda d: {"inputs": [*_v2(d)["inputs"], _v2(d)["inputs"][0]]}),
        J,
        400,
        "input 'user_id' given twice",
    ),
    ("v2 no inputs", INFER, _b(lambda d: {"inputs": []}), J, 400, "'inputs' must be a non-empty list"),
    (
        "v2 nested data",
        INFER,
        _b(lambda d: _v2_with(d, "user_id", data=[[v] for v in d["user_id"].tolist()])),
        J,
        400,
        "'user_id' is declared INT64, which holds integers -9223372036854775808..9223372036854775807; found [",
    ),
    (
        "v2 rows differ",
        INFER,
        _b(lambda d: _v2_with(d, "age", shape=[19], data=d["age"].tolist()[:19])),
        J,
        400,
        "input 'age' has 19 rows; other inputs have 20",
    ),
    (
        "v2 unknown output",
        INFER,
        _b(lambda d: {**_v2(d), "outputs": [{"name": "logits"}]}),
        J,
        400,
        "unknown output(s)",
    ),
    ("v2 unknown model", "/v2/models/other/infer", _b(lambda d: _v2(d)), J, 404, "model 'other' not found"),
    (
        "v2 unknown version",
        f"/v2/models/{NAME}/versions/7/infer",
        _b(lambda d: _v2(d)),
        J,
        404,
        f"model '{NAME}' has no version '7'; this server serves no numbered version",
    ),
    (
        "duplicate JSON key",
        INV,
        lambda d: b'{"dataframe_split": {"columns": ["a"], "columns": ["b"], "data": []}}',
        J,
        400,
        "request body has the key 'columns' twice in one object",
    ),
    (
        "duplicate JSON key at the top",
        INFER,
        lambda d: json.dumps(_v2(d)).encode()[:-1] + b', "inputs": []}',
        J,
        400,
        "request body has the key 'inputs' twice in one object",
    ),
    (
        "v2 INT8 holding 1193",
        INFER,
        _b(lambda d: _v2_with(d, "age", datatype="INT8", data=[1193] * len(d))),
        J,
        400,
        "input 'age' is declared INT8, which holds integers -128..127; found 1193",
    ),
    (
        "v2 UINT8 holding -1",
        INFER,
        _b(lambda d: _v2_with(d, "user_id", datatype="UINT8", data=[-1] * len(d))),
        J,
        400,
        "input 'user_id' is declared UINT8, which holds integers 0..255; found -1",
    ),
    (
        "v2 INT32 holding a float",
        INFER,
        _b(lambda d: _v2_with(d, "age", datatype="INT32", data=[1.5] * len(d))),
        J,
        400,
        "input 'age' is declared INT32, which holds integers -2147483648..2147483647; found 1.5",
    ),
    (
        "v2 FP16 beyond its range",
        INFER,
        _b(lambda d: _v2_with(d, "age", datatype="FP16", data=[70000.0] * len(d))),
        J,
        400,
        "input 'age' is declared FP16, which holds numbers of magnitude ≤ 65504; found 70000.0",
    ),
    (
        "v2 FP32 holding a string",
        INFER,
        _b(lambda d: _v2_with(d, "age", datatype="FP32", data=["1"] * len(d))),
        J,
        400,
        "input 'age' is declared FP32, which holds numbers of magnitude ≤ 3.40282e+38; found '1'",
    ),
    (
        "v2 BYTES holding a number",
        INFER,
        _b(lambda d: _v2_with(d, "gender", data=[1] * len(d))),
        J,
        400,
        "input 'gender' is declared BYTES, which holds strings; found 1",
    ),
    ("unknown path", "/predict", _b(_good), J, 404, "no such endpoint: '/predict'"),
    (
        "long value is cut",
        INV,
        _b(lambda d: _with(d, "user_id", "9" * 5000)),
        J,
        400,
        "found '99999999999999999...999999999999999999'",
    ),
]


def test_bad_requests_each_get_status_and_message_and_the_server_keeps_serving(
    server: ProcessServer, demo: DemoBundle
) -> None:
    rows = _rows(demo)
    expected = Predictor.load(demo.path).predict(rows)
    good = json.dumps(_good(rows)).encode()
    assert len(BAD) >= 25
    for name, path, make, headers, status, message in BAD:
        code, raw = _raw(server.url, "POST", path, make(rows), headers)
        body = json.loads(raw)  # every answer is valid JSON
        text = body.get("message", body.get("error", ""))
        assert code == status, f"{name}: {code} {raw[:300]!r}"
        assert message in text, f"{name}: {text!r}"
        assert len(raw) < 1000, f"{name}: the error echoes too much ({len(raw)} bytes)"
        code, raw = _raw(server.url, "POST", INV, good, J)
        assert code == 200, f"after {name}: {code} {raw[:300]!r}"
        np.testing.assert_array_equal(np.asarray(json.loads(raw)["predictions"]), expected, err_msg=name)
    code, raw = _raw(server.url, "GET", INV, b"", {})
    assert code == 405 and "accepts POST only" in json.loads(raw)["message"]


def test_null_dense_means_missing_as_in_training(server: ProcessServer, demo: DemoBundle) -> None:
    rows = _rows(demo, 3)
    r = requests.post(f"{server.url}/invocations", json=_with(rows, "age", None), timeout=30)
    assert r.status_code == 200, r.text
    offline = Predictor.load(demo.path).predict(rows.assign(age=[np.nan, *rows["age"][1:]]))
    np.testing.assert_array_equal(np.asarray(r.json()["predictions"]), offline)


def test_declared_oversized_body_is_refused_before_it_is_sent(server: ProcessServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", INV)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(100 * 1024 * 1024))  # 100 MB announced, nothing sent
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert "exceeds the limit of 65536 bytes" in json.loads(resp.read())["message"]
    finally:
        conn.close()


def test_streamed_body_is_cut_off_at_the_limit(server: ProcessServer) -> None:
    """A chunked body announces no length: the server stops reading once it passes the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"dataframe_split": {"columns": ["x"], "data": ['
        for _ in range(200):  # 200 × 8 KiB = 1.6 MB, 25× the limit
            yield b"[1]," * 2048

    try:
        r = requests.post(f"{server.url}/invocations", data=chunks(), headers=JSON, timeout=30)
    except requests.ConnectionError:
        pytest.fail("the server should answer 413, not drop the connection")
    assert r.status_code == 413 and "exceeds the limit of 65536 bytes" in r.json()["message"]
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200


def test_stopping_mdctr_serve_stops_all_its_workers(demo: DemoBundle, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-c", "from mdctr.cli import app; app()", "serve", "--model-uri", str(demo.path),
           "--port", str(port), "--workers", "2"]  # fmt: skip
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=venv_env())
    try:
        wait_healthy(
            f"http://127.0.0.1:{port}/v2/health/ready", timeout=120, proc=proc, log_path=tmp_path / "log"
        )
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len([c for c in children if c.is_running()]) >= 2, children
        os.kill(proc.pid, signal.SIGTERM)  # what Kubernetes or Ctrl-C sends to the server's main process
        assert proc.wait(timeout=60) is not None
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], f"still running after the server stopped: {alive}"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_cli_dry_run_resolves_a_local_bundle(demo: DemoBundle) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    res = CliRunner().invoke(app, ["serve", "--dry-run", "--model-uri", str(demo.path), "--port", "5123"])
    assert res.exit_code == 0, res.output
    assert f"(bundle {demo.path})" in res.output and f"/v2/models/{NAME}/infer" in res.output
    res = CliRunner().invoke(app, ["serve", "--dry-run", "--model-uri", str(demo.path.parent)])
    assert res.exit_code != 0 and "holds no model bundle" in str(res.exception)
    res = CliRunner().invoke(app, ["serve", "--dry-run", "--model-uri", str(demo.path / "missing")])
    assert res.exit_code == 2 and "is not a directory" in " ".join(res.output.replace("│", " ").split())


def test_requests_beyond_max_concurrent_get_a_json_503(demo: DemoBundle) -> None:
    """In-process ASGI: while one request is still sending its body, a second one is refused with 503."""
    import asyncio

    from mdctr.serving.app import ScoringApp

    app = ScoringApp(Predictor.load(demo.path), model_name=NAME, limits=ServeLimits(max_concurrent=1))
    body = json.dumps(_good(_rows(demo, 2))).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": INV,
        "headers": [(b"content-type", b"application/json")],
    }

    async def run() -> tuple[list[dict], list[dict]]:
        release = asyncio.Event()
        slow_sent: list[dict] = []
        fast_sent: list[dict] = []

        async def slow_receive() -> dict:
            await release.wait()  # the body arrives only after the second request was answered
            return {"type": "http.request", "body": body, "more_body": False}

        async def fast_receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def collect(into: list[dict], message: dict) -> None:
            into.append(message)

        slow = asyncio.create_task(app(scope, slow_receive, lambda m: collect(slow_sent, m)))
        await asyncio.sleep(0.01)
        await app(scope, fast_receive, lambda m: collect(fast_sent, m))
        release.set()
        await slow
        return slow_sent, fast_sent

    slow_sent, fast_sent = asyncio.run(run())
    assert fast_sent[0]["status"] == 503
    assert "server busy" in json.loads(fast_sent[1]["body"])["message"]
    assert slow_sent[0]["status"] == 200 and len(json.loads(slow_sent[1]["body"])["predictions"]) == 2
