"""The served-request log (``mdctr serve --log``): the files on disk or S3 hold exactly what was served (raw
values, request ids, predictions, routing domains), the queue drops and counts instead of blocking, sampling
follows the request id, SIGTERM flushes the last batch, and logging does not change a response byte."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import torch

from mdctr.domains.miner import DomainMiner, MinerConfig
from mdctr.models import build_model
from mdctr.routing.sources import build_routed
from mdctr.schema import FeatureSchema
from mdctr.serving import Predictor, save_bundle
from mdctr.serving.app import REQUEST_LOG_PATH, ScoringApp
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.serving.request import Columns
from mdctr.serving.requestlog import (
    LOG_COLUMNS,
    LOG_DOMAIN,
    LOG_MINED_DOMAIN,
    LOG_MODEL,
    LOG_PREDICTION,
    LOG_REQUEST_ID,
    LOG_SERVED_AT,
    LOG_VERSION,
    RequestLog,
    RequestLogError,
    RequestLogSettings,
    check_destination,
    log_files,
    read_request_log,
)
from mdctr.serving.server import ProcessServer, start_model_server

NAME = "mdctr-demo"
INFER = f"/v2/models/{NAME}/infer"
V2_TYPES = {"user_id": "INT64", "item_id": "INT64", "gender": "BYTES", "age": "FP64", "domain": "INT64"}


def _rows(demo: DemoBundle, n: int, seed: int = 1) -> pd.DataFrame:
    cols = list(DEMO_SCHEMA.serving_columns)
    return demo.table[cols].sample(n, random_state=seed).reset_index(drop=True)


def _v2(df: pd.DataFrame) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": c, "shape": [len(df)], "datatype": V2_TYPES[c], "data": df[c].tolist()}
            for c in df.columns
        ]
    }


def _split(df: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": json.loads(df.to_json(orient="split", index=False))}


def _read(uri: str, schema: FeatureSchema = DEMO_SCHEMA) -> pd.DataFrame:
    batches = list(read_request_log(uri, schema))
    if not batches:
        return pd.DataFrame(columns=[*schema.serving_columns, *LOG_COLUMNS])
    return pa.Table.from_batches(batches).to_pandas()


def _call(
    app: ScoringApp, path: str, body: Any, headers: dict[bytes, bytes] | None = None
) -> tuple[int, dict, bytes]:
    """One request through the ASGI app in this process: (status, response headers, body bytes)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json"), *(headers or {}).items()],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def _log(tmp_path: Path, predictor: Predictor, **settings: Any) -> RequestLog:
    return RequestLog(
        RequestLogSettings(uri=str(tmp_path / "log"), **settings),
        schema=predictor.spec.schema,
        model=NAME,
        version="7",
        domain_values=predictor.spec.domain_values,
    )


# -- in this process: the app, the predictor's routes, the writer ------------------------------------------
def test_logged_rows_are_the_request_as_sent_with_ids_and_the_served_bytes(
    demo: DemoBundle, tmp_path: Path
) -> None:
    predictor = Predictor.load(demo.path)
    rlog = _log(tmp_path, predictor)
    logged, plain = (
        ScoringApp(predictor, model_name=NAME, request_log=rlog),
        ScoringApp(predictor, model_name=NAME),
    )
    rows = _rows(demo, 6)
    v2 = _v2(rows)
    v2["inputs"][3]["data"][2] = None  # a missing dense value: logged as null
    without_domain = _v2(rows.drop(columns=["domain"]).head(2))  # the dnn does not need the domain column
    answers = []
    for path, body, rid in [
        (INFER, v2, b"req-A"),
        ("/invocations", _split(rows.head(3)), None),
        (INFER, without_domain, b"B"),
    ]:
        headers = {b"x-request-id": rid} if rid else {}
        status, got_headers, raw = _call(logged, path, body, headers)
        assert status == 200, raw
        assert _call(plain, path, body, headers)[2] == raw  # logging on or off: the same bytes
        answers.append((got_headers[b"x-request-id"].decode(), orjson_preds(raw)))
    assert answers[0][0] == "req-A" and answers[2][0] == "B"
    assert len(answers[1][0]) == 32 and int(answers[1][0], 16) >= 0  # a fresh uuid4 hex
    rlog.close()
    df = _read(rlog.settings.uri)
    assert list(df.columns) == [*DEMO_SCHEMA.serving_columns, *LOG_COLUMNS]
    assert df[LOG_REQUEST_ID].tolist() == [f"{rid}:{i}" for rid, preds in answers for i in range(len(preds))]
    np.testing.assert_array_equal(df[LOG_PREDICTION].to_numpy(), np.concatenate([p for _, p in answers]))
    bodies = [v2, _split(rows.head(3)), without_domain]
    for col in ("user_id", "item_id", "gender"):
        assert df[col].tolist() == [str(v) for b in bodies for v in _sent(b, col)]  # sparse as str(value)
    ages = np.array([np.nan if v is None else v for b in bodies for v in _sent(b, "age")])
    assert np.isnan(ages[2])
    np.testing.assert_array_equal(df["age"].to_numpy(), ages)  # as sent (a missing value: null)
    assert df["age"].isna().tolist() == [i == 2 for i in range(len(df))]
    assert df["domain"].iloc[:9].tolist() == [v for b in bodies[:2] for v in _sent(b, "domain")]
    assert df["domain"].iloc[9:].isna().all()  # not sent
    assert (df[LOG_MODEL] == NAME).all() and (df[LOG_VERSION] == "7").all()
    assert df[LOG_DOMAIN].isna().all() and df[LOG_MINED_DOMAIN].isna().all()  # source "none": no domains
    assert str(df[LOG_SERVED_AT].dtype) == "datetime64[ms, UTC]"
    assert (pd.Timestamp.now(tz="UTC") - df[LOG_SERVED_AT]).max() < pd.Timedelta(minutes=1)
    (path,) = log_files(rlog.settings.uri)
    assert Path(path).parent.name == f"date={df[LOG_SERVED_AT].iloc[0].date().isoformat()}"
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert rlog.stats() | {"uri": None} == {
        "enabled": True, "uri": None, "sample": 1.0, "logged_rows": 11, "dropped_rows": 0, "failed_rows": 0,
        "files_written": 1, "write_errors": 0, "held_rows": 0, "unsampled_requests": 0, "queue_rows": 200_000,
    }  # fmt: skip


def _sent(body: dict[str, Any], col: str) -> list[Any]:
    """The values of ``col`` in a v2 or ``dataframe_split`` request body, as sent."""
    if "inputs" in body:
        return next(t["data"] for t in body["inputs"] if t["name"] == col)
    split = body["dataframe_split"]
    j = split["columns"].index(col)
    return [row[j] for row in split["data"]]


def orjson_preds(raw: bytes) -> np.ndarray:
    body = json.loads(raw)
    return np.asarray(body["predictions"] if "predictions" in body else body["outputs"][0]["data"])


def test_a_bad_request_id_is_refused_and_every_answer_carries_one(demo: DemoBundle) -> None:
    app = ScoringApp(Predictor.load(demo.path), model_name=NAME)
    body = _split(_rows(demo, 1))
    for bad in (b"", b"a b", b"x" * 129, "é".encode()):
        status, headers, raw = _call(app, "/invocations", body, {b"x-request-id": bad})
        assert status == 400 and "X-Request-Id must be 1–128 visible ASCII characters" in raw.decode(), raw
        assert len(headers[b"x-request-id"]) == 32  # the answer still carries an id (a fresh one)
    status, headers, raw = _call(app, "/invocations", {"dataframe_split": {}}, {b"x-request-id": b"mine"})
    assert status == 400 and headers[b"x-request-id"] == b"mine"  # an error answer keeps the client's id
    assert _call(app, "/nope", body, {b"x-request-id": b"z"})[1][b"x-request-id"] == b"z"


def test_every_domain_source_reports_its_routes_from_the_same_forward(
    demo: DemoBundle, tmp_path: Path
) -> None:
    pred = Predictor.load(demo.path)
    rows = _rows(demo, 40)
    cols = pred.parser.from_frame(rows)
    kw = dict(model_name="dnn", model_config=pred.info.model_config, width=1.0, spec=demo.spec)
    three = build_model("dnn", replace(pred.info.inputs, num_domains=3), config=pred.info.model_config)
    three.load_state_dict(pred.model.state_dict())
    hand = Predictor.load(save_bundle(tmp_path / "hand", domain_source="handcrafted", model=three, **kw))
    scored = hand.score_columns(cols, routes=True)
    assert scored.domain.tolist() == rows["domain"].tolist() and scored.mined is None

    torch.manual_seed(0)
    miner = DomainMiner(
        pred.info.inputs, MinerConfig(num_codes=3, hidden=(8,), head_hidden=(8,), embed_dim=4)
    )
    mined = Predictor.load(
        save_bundle(tmp_path / "mined", domain_source="mined", miner=miner, model=pred.model, **kw)
    )
    scored = mined.score_columns(cols, routes=True)
    assert scored.mined.tolist() == miner.eval().assign(hand.encode(rows)).tolist() and scored.domain is None

    config = {"num_codes": 4, "shared": [8], "specific": [8]}
    a2 = _spread_codes(build_model("adaptive2", pred.info.inputs, config=config).eval(), hand.encode(rows))
    own = Predictor.load(
        save_bundle(
            tmp_path / "a2",
            domain_source="mined",
            model=a2,
            **{**kw, "model_name": "adaptive2", "model_config": config},
        )
    )
    scored = own.score_columns(cols, routes=True)
    assert (
        scored.mined.tolist() == own.model.assign_codes(own.encode(rows)).tolist() and scored.domain is None
    )
    np.testing.assert_array_equal(scored.pctr, own.predict_columns(cols))  # the same forward, the same scores
    assert own.score_columns(cols).mined is None  # routes only when asked for

    joint_config = {"mined_joint": {"num_codes": 4}}  # a dnn with its own VQ-VAE (JointMined)
    joint_model = build_routed(
        "dnn", "mined-joint", replace(pred.info.inputs, num_domains=4), config=joint_config
    )
    joint = Predictor.load(
        save_bundle(
            tmp_path / "joint",
            domain_source="mined-joint",
            model=_spread_codes(joint_model.eval(), hand.encode(rows)),
            **{**kw, "model_config": joint_config},
        )
    )
    routed = joint.score_columns(cols, routes=True)
    assert routed.mined.tolist() == joint.model.assign_codes(joint.encode(rows)).tolist()
    assert len(set(routed.mined.tolist())) > 1 and len(set(scored.mined.tolist())) > 1

    # the app hands those codes to the log
    rlog = _log(tmp_path / "a2log", own)
    status, _, raw = _call(ScoringApp(own, model_name=NAME, request_log=rlog), "/invocations", _split(rows))
    assert status == 200, raw
    rlog.close()
    assert _read(rlog.settings.uri)[LOG_MINED_DOMAIN].tolist() == scored.mined.tolist()


def _spread_codes(model: Any, data: Any) -> Any:
    """Set a self-mining model's codebook to the encodings of distinct rows of ``data`` (as its training's
    data-dependent init does), so that the rows use several codes, not one."""
    with torch.no_grad():
        x = model.embed(data.batch(0, len(data)))
        model.vqvae.init_codebook(model.vqvae.encode(x), torch.Generator().manual_seed(0))
    return model


def test_raw_domain_values_and_routing_domains_are_logged(tmp_path: Path) -> None:
    """Data with raw domain values (``"us"``) logs them as strings; the hand-crafted routing domain as int32."""
    schema = FeatureSchema(
        name="shop",
        sparse=("user", "item"),
        dense=("price",),
        label="y",
        domain="country",
        domain_names=("us", "de", "fr"),
    )
    rlog = RequestLog(
        RequestLogSettings(uri=str(tmp_path / "log")),
        schema=schema,
        model="m",
        domain_values=["us", "de", "fr"],
    )
    cols = Columns(
        sparse={"user": ["u1", "u2", "u3"], "item": [3, 4, 5]},
        dense=np.array([[1.0], [np.nan], [2.5]]),
        domain=np.array([2, 0, 1]),
    )
    rlog.submit("r", cols, np.array([0.1, 0.2, 0.3]), domain=np.array([2, 0, 1]), mined=None)
    absent = Columns(sparse={"user": ["u9"], "item": [1]}, dense=np.array([[3.0]]), domain=np.array([-1]))
    rlog.submit("s", absent, np.array([0.4]), domain=None, mined=np.array([5]))
    rlog.close()
    got = pa.Table.from_batches(list(read_request_log(str(tmp_path / "log"), schema))).to_pydict()
    assert got["country"] == ["fr", "us", "de", None]
    assert got["user"] == ["u1", "u2", "u3", "u9"] and got["item"] == ["3", "4", "5", "1"]
    assert got["price"][0] == 1.0 and got["price"][1] is None
    assert got[LOG_DOMAIN] == [2, 0, 1, None] and got[LOG_MINED_DOMAIN] == [None, None, None, 5]
    table = pq.read_table(log_files(str(tmp_path / "log"))[0])
    assert (
        table.schema.field(LOG_DOMAIN).type == pa.int32()
        and table.schema.field("country").type == pa.string()
    )


def test_sampling_follows_the_request_id(demo: DemoBundle, tmp_path: Path) -> None:
    predictor = Predictor.load(demo.path)
    body = _split(_rows(demo, 1))
    ids = [f"id-{i}" for i in range(400)]
    for rate in (0.0, 0.5):
        rlog = _log(tmp_path / str(rate), predictor, sample=rate)
        app = ScoringApp(predictor, model_name=NAME, request_log=rlog)
        for rid in ids:
            assert _call(app, "/invocations", body, {b"x-request-id": rid.encode()})[0] == 200
        rlog.close()
        df = _read(rlog.settings.uri)
        want = [r for r in ids if zlib.crc32(r.encode()) < rate * 2**32]
        assert df[LOG_REQUEST_ID].tolist() == [f"{r}:0" for r in want]
        assert rlog.stats()["unsampled_requests"] == len(ids) - len(want)
        if rate == 0.0:
            assert log_files(rlog.settings.uri) == []  # nothing at all is written
        else:
            assert 0.4 * len(ids) <= len(want) <= 0.6 * len(ids)


def test_a_full_queue_drops_and_counts_without_blocking(demo: DemoBundle, tmp_path: Path) -> None:
    predictor = Predictor.load(demo.path)
    rlog = _log(tmp_path, predictor, queue_rows=10, flush_seconds=3600)  # no writer thread: nothing drains
    app = ScoringApp(predictor, model_name=NAME, request_log=rlog)
    t0 = time.perf_counter()
    statuses = [_call(app, "/invocations", _split(_rows(demo, n)))[0] for n in (4, 4, 3, 2, 20)]
    assert statuses == [200] * 5 and time.perf_counter() - t0 < 10
    assert (rlog.stats()["held_rows"], rlog.stats()["dropped_rows"]) == (10, 3 + 20)  # 4 + 4 + 2 fit
    rlog.close()
    assert len(_read(rlog.settings.uri)) == 10 and rlog.stats()["logged_rows"] == 10


def test_write_errors_are_counted_and_the_writer_goes_on(demo: DemoBundle, tmp_path: Path) -> None:
    predictor = Predictor.load(demo.path)
    rlog = _log(tmp_path, predictor)
    cols = predictor.parser.from_frame(_rows(demo, 3))
    (tmp_path / "log").write_text("a file where the log directory should be")
    rlog.submit("x", cols, np.zeros(3))
    rlog._flush()
    assert (rlog.stats()["write_errors"], rlog.stats()["failed_rows"], rlog.stats()["held_rows"]) == (1, 3, 0)
    (tmp_path / "log").unlink()
    rlog.submit("y", cols, np.zeros(3))
    rlog.close()
    assert _read(rlog.settings.uri)[LOG_REQUEST_ID].tolist() == ["y:0", "y:1", "y:2"]


def test_reader_selects_columns_and_time_window(demo: DemoBundle, tmp_path: Path) -> None:
    predictor = Predictor.load(demo.path)
    rlog = _log(tmp_path, predictor)
    cols = predictor.parser.from_frame(_rows(demo, 2))
    for rid in ("a", "b"):
        rlog.submit(rid, cols, np.array([0.25, 0.75]))
        rlog._flush()  # one file each
        time.sleep(0.01)
    uri = rlog.settings.uri
    files = log_files(uri)
    assert len(files) == 2 and files == sorted(files)
    (Path(files[0]).parent / ".part-x.parquet.tmp").write_bytes(b"half a file")  # a write in progress
    assert log_files(uri) == files
    second = pq.read_table(files[1])[LOG_SERVED_AT][0].as_py()
    batches = list(read_request_log(uri, [LOG_REQUEST_ID, LOG_PREDICTION], since=second))
    assert pa.Table.from_batches(batches).to_pydict() == {
        LOG_REQUEST_ID: ["b:0", "b:1"],
        LOG_PREDICTION: [0.25, 0.75],
    }
    assert list(read_request_log(uri, until=second - dt.timedelta(days=400))) == []
    with pytest.raises(RequestLogError, match=r"no column\(s\) \['nope'\]"):
        list(read_request_log(uri, ["nope"]))
    assert list(read_request_log(str(tmp_path / "empty"))) == []


def test_settings_travel_by_environment_and_bad_ones_are_refused(tmp_path: Path) -> None:
    settings = RequestLogSettings(uri="s3://b/p", sample=0.25, queue_rows=7, flush_rows=3, flush_seconds=0.5)
    env = settings.to_env()
    assert env["MDCTR_SERVE_LOG"] == "s3://b/p" and env["MDCTR_SERVE_LOG_SAMPLE"] == "0.25"
    assert RequestLogSettings.from_env(env) == settings
    assert RequestLogSettings.from_env({}) is None
    with pytest.raises(RequestLogError, match=r"sample rate must be in \[0, 1\]; got 1.5"):
        RequestLogSettings(uri="x", sample=1.5)
    with pytest.raises(RequestLogError, match="MDCTR_SERVE_LOG_QUEUE_ROWS='many' is not a valid int"):
        RequestLogSettings.from_env({"MDCTR_SERVE_LOG": "x", "MDCTR_SERVE_LOG_QUEUE_ROWS": "many"})
    (tmp_path / "f").write_text("")
    with pytest.raises(RequestLogError, match="cannot create the directory"):
        check_destination(str(tmp_path / "f" / "log"))


# -- real servers ---------------------------------------------------------------------------------------------
def _wait_logged(srv: ProcessServer, rows: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = requests.get(srv.url + REQUEST_LOG_PATH, timeout=5).json()
        if stats["logged_rows"] >= rows or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


@pytest.mark.integration
def test_served_requests_land_in_files_that_match_the_responses(demo: DemoBundle, tmp_path: Path) -> None:
    uri = str(tmp_path / "log")
    settings = RequestLogSettings(uri=uri, flush_seconds=0.2)
    with start_model_server(str(demo.path), request_log=settings, log_dir=tmp_path) as srv:
        assert requests.get(srv.url + REQUEST_LOG_PATH, timeout=5).json()["enabled"] is True
        sent, preds, ids = [], [], []
        for i in range(5):
            rows = _rows(demo, 1 + 3 * i, seed=i)
            path, body = (INFER, _v2(rows)) if i % 2 else ("/invocations", _split(rows))
            r = requests.post(srv.url + path, json=body, headers={"X-Request-Id": f"t-{i}"}, timeout=30)
            assert r.status_code == 200 and r.headers["X-Request-Id"] == f"t-{i}", r.text
            sent.append(body)
            preds.append(orjson_preds(r.content))
            ids += [f"t-{i}:{j}" for j in range(len(rows))]
        stats = _wait_logged(srv, len(ids))
        assert stats["logged_rows"] == len(ids) and stats["dropped_rows"] == 0 and stats["write_errors"] == 0
        df = _read(uri)  # read while the server runs: every listed file is whole
    assert df[LOG_REQUEST_ID].tolist() == ids
    np.testing.assert_array_equal(df[LOG_PREDICTION].to_numpy(), np.concatenate(preds))  # what the client got
    for col in ("user_id", "item_id", "gender"):
        assert df[col].tolist() == [str(v) for b in sent for v in _sent(b, col)]
    np.testing.assert_array_equal(df["age"].to_numpy(), [v for b in sent for v in _sent(b, "age")])
    assert df["domain"].tolist() == [v for b in sent for v in _sent(b, "domain")]
    assert (df[LOG_MODEL] == NAME).all()


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_flushes_the_queue_and_a_full_queue_never_fails_a_request(
    demo: DemoBundle, tmp_path: Path, workers: int
) -> None:
    """Nothing is written before SIGTERM (an hour's flush interval); 15 one-row requests against a 10-row queue
    per worker all succeed; what was queued is in the files once the server has stopped."""
    uri = str(tmp_path / "log")
    settings = RequestLogSettings(uri=uri, queue_rows=10, flush_rows=1000, flush_seconds=3600)
    srv = start_model_server(str(demo.path), workers=workers, request_log=settings, log_dir=tmp_path)
    ids = [uuid.uuid4().hex for _ in range(15)]
    try:
        body = _split(_rows(demo, 1))
        for rid in ids:  # a new connection each: with 2 workers the kernel spreads them
            r = requests.post(srv.url + "/invocations", json=body, headers={"X-Request-Id": rid}, timeout=30)
            assert r.status_code == 200, r.text
        if workers == 1:
            stats = requests.get(srv.url + REQUEST_LOG_PATH, timeout=5).json()
            assert (stats["held_rows"], stats["dropped_rows"], stats["files_written"]) == (10, 5, 0)
        assert log_files(uri) == []
    finally:
        srv.stop()  # SIGTERM to the server's process group
    logged = _read(uri)[LOG_REQUEST_ID].str.removesuffix(":0").tolist()
    assert set(logged) <= set(ids) and len(set(logged)) == len(logged)
    if workers == 1:
        assert logged == ids[:10]  # the first ten fit; the last five were dropped
    else:
        assert 10 <= len(logged) <= 15
    if workers == 1:  # (spawned workers do not configure logging)
        assert "request log closed" in srv.log_path.read_text()


@pytest.mark.integration
def test_the_log_goes_to_s3(
    demo: DemoBundle, tmp_path: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{s3_server.bucket}/requests-{uuid.uuid4().hex[:8]}"
    rows = _rows(demo, 25)
    settings = RequestLogSettings(uri=uri, flush_seconds=3600)
    with start_model_server(
        str(demo.path), request_log=settings, env=s3_server.env(), log_dir=tmp_path
    ) as srv:
        r = requests.post(srv.url + INFER, json=_v2(rows), headers={"X-Request-Id": "s3"}, timeout=30)
        assert r.status_code == 200, r.text
    df = _read(uri)  # the server stopped (SIGTERM): its last batch is one object in the bucket
    assert df[LOG_REQUEST_ID].tolist() == [f"s3:{i}" for i in range(25)]
    np.testing.assert_array_equal(df[LOG_PREDICTION].to_numpy(), orjson_preds(r.content))
    (key,) = [
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=uri.split("/")[-1])[
            "Contents"
        ]
    ]
    assert key.split("/")[1].startswith("date=") and key.endswith(".parquet")


@pytest.mark.integration
def test_serve_refuses_a_log_destination_it_cannot_write(demo: DemoBundle, tmp_path: Path) -> None:
    import subprocess

    from mdctr.serving.server import serve_command, venv_env

    (tmp_path / "f").write_text("")
    cmd = serve_command(
        str(demo.path), port=1, request_log=RequestLogSettings(uri=str(tmp_path / "f" / "log"))
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=venv_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "request log" in proc.stderr and "cannot create the directory" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1
