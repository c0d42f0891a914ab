"""``mlflow models serve`` on a registered champion still works (the pyfunc is loaded by mdctr's installed
loader module): served pCTR equals the offline Predictor, bad requests get a 4xx with mdctr's message (no
signature cast runs first, so ``"5"`` for an id is refused, not truncated), and the server keeps serving."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from mdctr import tracking
from mdctr.serving import Predictor, ProcessServer
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.serving.server import (
    free_port,
    serve_command,
    start_mlflow_scoring_server,
    start_model_server,
    venv_env,
    wait_healthy,
)
from mdctr.tracking.names import CHAMPION, registered_model_name

pytestmark = pytest.mark.integration
#: the demo bundle's dataset registers under its own model; `mdctr serve` names its v2 route after it
NAME = registered_model_name(DEMO_SCHEMA.name)
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def registry(demo: DemoBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A tracking store whose champion is the demo bundle: (tracking URI, version)."""
    uri = tracking.configure(f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}")
    parent = tracking.start_parent_run(uri, run_name="serve-test")
    run_id = tracking.log_training_run(
        uri, parent, run_name="dnn", params={"model": "dnn"}, system_metrics=False
    )
    rv = tracking.register_bundle(uri, demo.path, run_id=run_id, input_example=demo.table)
    tracking.promote(uri, rv.version, name=rv.name)
    return uri, rv.version


def test_mdctr_serve_resolves_the_champion_alias(
    registry: tuple[str, str], demo: DemoBundle, tmp_path: Path
) -> None:
    uri, version = registry
    with start_model_server(f"models:/{NAME}@{CHAMPION}", tracking_uri=uri, log_dir=tmp_path) as srv:
        meta = requests.get(f"{srv.url}/v2/models/{NAME}", timeout=10).json()
        assert meta["versions"] == [version]
        rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(50)
        r = requests.post(f"{srv.url}/invocations", data=_split(rows), headers=JSON, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(
            np.asarray(r.json()["predictions"]), Predictor.load(demo.path).predict(rows)
        )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_mdctr_serve_removes_its_model_copy_when_stopped(
    registry: tuple[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    """The downloaded copy (``mdctr-model-*`` in the temp directory) lives exactly as long as the server."""
    uri, _ = registry
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    cmd = serve_command(f"models:/{NAME}@{CHAMPION}", port=port, tracking_uri=uri)
    log = tmp_path / "log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=venv_env({"TMPDIR": str(tmp)}))
    try:
        wait_healthy(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120, proc=proc, log_path=log)
        assert len(list(tmp.glob("mdctr-model-*"))) == 1  # the copy being served
        proc.send_signal(sig)  # what Kubernetes (SIGTERM) or Ctrl-C (SIGINT) sends
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp.glob("mdctr-model-*")) == [], log.read_text()[-2000:]


@pytest.fixture(scope="module")
def server(registry: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    uri, _ = registry
    srv = start_mlflow_scoring_server(
        f"models:/{NAME}@{CHAMPION}", tracking_uri=uri, log_dir=tmp_path_factory.mktemp("srv")
    )
    try:
        yield srv
    finally:
        srv.stop()


def _split(df) -> str:
    return json.dumps({"dataframe_split": json.loads(df.to_json(orient="split", index=False))})


def test_served_predictions_equal_offline(server: ProcessServer, demo: DemoBundle) -> None:
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].sample(300, random_state=1).reset_index(drop=True)
    r = requests.post(f"{server.url}/invocations", data=_split(rows), headers=JSON, timeout=30)
    assert r.status_code == 200, r.text
    served = np.asarray(r.json()["predictions"], dtype=np.float64)
    np.testing.assert_allclose(served, Predictor.load(demo.path).predict(rows), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("missing column", lambda rows: _split(rows.drop(columns=["age"])), "missing column(s) ['age']"),
        ("wrong type", lambda rows: _split(rows.assign(user_id="abc")), "user_id"),
        ("numeric string id", lambda rows: _split(rows.assign(user_id="5")), "'user_id' expects integer ids"),
        ("fractional id", lambda rows: _split(rows.assign(item_id=1.9)), "'item_id' expects integer ids"),
        ("unseen category", lambda rows: _split(rows.assign(gender="X")), "'gender' has 3 unknown value(s)"),
        ("malformed json", lambda rows: '{"dataframe_split": {"columns": [', "valid JSON"),
        ("empty body", lambda rows: "", "valid JSON"),
        ("no rows", lambda rows: _split(rows.head(0)), "no rows"),
    ],
)
def test_bad_requests_get_4xx_and_server_keeps_serving(
    server: ProcessServer, demo: DemoBundle, name: str, body, message: str
) -> None:
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(3)
    r = requests.post(f"{server.url}/invocations", data=body(rows), headers=JSON, timeout=30)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
    assert message in r.json()["message"], f"{name}: {r.text[:500]}"
    ok = requests.post(f"{server.url}/invocations", data=_split(rows), headers=JSON, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3
