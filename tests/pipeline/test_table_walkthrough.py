"""Executes the walkthrough of docs/datasets.md ("from a CSV to a served prediction") exactly as written: its
schema and CSV-writing script into a temporary directory, its commands with the venv's ``mdctr`` (the pipeline
on the KFP subprocess runner, MLflow on SQLite), ``mdctr serve`` on a free port and the ``curl`` requests over
HTTP. The documented outputs that do not depend on training are compared line by line."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "datasets.md"
MDCTR = Path(sys.executable).parent / "mdctr"
DOC_PORT = "8080"

pytestmark = pytest.mark.integration


def walkthrough_blocks() -> dict[str, str]:
    """The fenced blocks of the walkthrough, by the name in the ``<!-- walkthrough: NAME -->`` line above each."""
    text = DOC.read_text()
    blocks = dict(re.findall(r"<!-- walkthrough: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))
    assert set(blocks) == {"shop/schema.yaml", "make_events.py", "commands"}, sorted(blocks)
    return blocks


def commands(block: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines, each with the output lines the page shows under it."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def curl(argv: list[str]) -> tuple[int, dict]:
    """Do what the page's ``curl -s URL -H ... -d BODY`` does, with urllib; (status, JSON answer)."""
    url = next(a for a in argv if a.startswith("http://"))
    body = argv[argv.index("-d") + 1].encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mdctr serve exited with {server.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mdctr serve not ready on port {port} after {timeout:.0f}s")


@pytest.mark.timeout(300)
def test_docs_walkthrough_from_csv_to_served_prediction(tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "schema.yaml").write_text(blocks["shop/schema.yaml"])
    (tmp_path / "make_events.py").write_text(blocks["make_events.py"])
    port = free_port()
    env = {**os.environ, "PATH": f"{MDCTR.parent}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    answers: list[tuple[int, dict]] = []
    server: subprocess.Popen | None = None
    try:
        for line, shown in commands(blocks["commands"]):
            argv = shlex.split(line.replace(DOC_PORT, str(port)))
            if argv[0] == "curl":
                answers.append(curl(argv))
                expected = json.loads(shown[0])
                if "message" in expected:  # the refusal is exact; predictions depend on training
                    assert answers[-1] == (400, expected)
                continue
            if argv[0] == "python":
                argv[0] = sys.executable
            elif argv[0] == "mdctr":
                argv[0] = str(MDCTR)
            if argv[-1] == "&":
                server = subprocess.Popen(
                    argv[:-1],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / "serve.log").open("w"),
                )
                wait_ready(port, server)
                continue
            res = subprocess.run(
                argv,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert res.returncode == 0, f"{line}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            printed = res.stdout.splitlines()
            if argv[1:3] == ["data", "describe"]:
                assert printed == shown  # data and counts: no training involved
            elif argv[1:3] == ["pipeline", "run"]:
                gate = [ln for ln in printed if ln.startswith("gate:")]
                assert gate == [ln for ln in shown if ln.startswith("gate:")], printed
                assert any(ln.startswith("winner: ") for ln in printed)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    # the first request carried raw countries; the served values are the champion's for their domain ids
    (status, served), refusal = answers
    assert status == 200 and len(served["predictions"]) == 2
    assert refusal[0] == 400 and "'country'" in refusal[1]["message"] and "'jp'" in refusal[1]["message"]
    from mdctr.serving import Predictor
    from mdctr.serving.bundle import bundle_dir_of
    from mdctr.serving.request import Columns
    from mdctr.tracking.pyfunc import download_model

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    local, _ = download_model("models:/mdctr-shop@champion", tracking_uri=uri)
    predictor = Predictor.load(bundle_dir_of(local))
    assert predictor.spec.domain_values == ["de", "fr", "us"]
    cols = Columns(
        sparse={"user": ["u24", "u24"], "item": [36, 36]},
        dense=np.array([[2.63], [2.63]]),
        domain=np.array([0, 2]),  # de, us by id
    )
    np.testing.assert_allclose(served["predictions"], predictor.predict_columns(cols), rtol=1e-6)

    # outputs carry the schema's name, not the adapter's ("table")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    names = {
        r.info.run_name for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }
    assert "shop@local" in names and not any(n.startswith("table@") for n in names)
    version = client.get_model_version("mdctr-shop", "1")
    assert version.tags["mdctr.schema"] == "shop"
