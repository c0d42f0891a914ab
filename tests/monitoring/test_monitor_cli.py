"""The real ``mdctr monitor`` command: exit 0 on a clean replay, exit 1 with one line per breach on planted
drift, the report files, a monitoring run in a real MLflow store, and bad input as one error line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MDCTR = str(Path(sys.executable).parent / "mdctr")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MDCTR, "monitor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.mark.integration  # runs the installed CLI in a subprocess and writes to a real MLflow store
def test_cli_exit_codes_report_and_mlflow_run(traffic: Any, tmp_path: Path, mlflow_sqlite_uri: str) -> None:
    from mlflow import MlflowClient

    from mdctr.tracking.monitoring import MONITORING_EXPERIMENT

    common = [
        "--reference",
        str(traffic.prepared),
        "--reference-codes",
        str(traffic.codes),
        "--gx-rows",
        "1000",
    ]
    clean = _cli(
        "--log",
        str(traffic.write(traffic.test)),
        "--out",
        str(tmp_path / "clean"),
        *common,
        "--tracking-uri",
        mlflow_sqlite_uri,
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert "breach: " not in clean.stderr
    summary = json.loads((tmp_path / "clean" / "monitoring_summary.json").read_text())
    assert summary["rows"] == len(traffic.test) and summary["breaches"] == []

    window = traffic.test.copy()
    flood = np.random.default_rng(2).random(len(window)) < 0.4
    window.loc[flood, "f0"] = 5_000_000 + np.arange(int(flood.sum()))
    drifted = _cli(
        "--log",
        str(traffic.write(window)),
        "--out",
        str(tmp_path / "drift"),
        *common,
        "--tracking-uri",
        mlflow_sqlite_uri,
    )
    assert drifted.returncode == 1, drifted.stderr[-2000:]
    lines = [x for x in drifted.stderr.splitlines() if x.startswith("breach: ")]
    assert any("feature 'f0': OOV share" in x for x in lines), drifted.stderr[-2000:]
    assert (tmp_path / "drift" / "monitoring_report.html").read_text().count("BREACH") >= 1

    client = MlflowClient(mlflow_sqlite_uri)
    exp = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    assert runs[1].data.metrics["oov.f0"] == pytest.approx(flood.mean())
    assert runs[0].data.metrics["window.rows"] == len(traffic.test)
    assert runs[0].data.tags["mdctr.monitor_status"] == "ok"
    artifacts = [a.path for a in client.list_artifacts(runs[1].info.run_id, "monitoring")]
    assert "monitoring/monitoring_report.html" in artifacts


@pytest.mark.integration
def test_cli_bad_input_is_one_line(traffic: Any, tmp_path: Path) -> None:
    res = _cli(
        "--log", str(tmp_path / "nothing"), "--reference", str(traffic.prepared), "--out", str(tmp_path)
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "no request-log files" in res.stderr
    res = _cli(
        "--log", str(traffic.write(traffic.test)), "--reference", str(tmp_path), "--out", str(tmp_path)
    )
    assert res.returncode == 2 and "not a prepared-data directory" in res.stderr


@pytest.mark.integration  # starts a local S3 server (s3rver)
def test_monitor_reads_a_log_on_s3(traffic: Any, tmp_path: Path, s3_server: Any, monkeypatch: Any) -> None:
    import boto3

    from mdctr.monitoring.logsource import Window
    from mdctr.monitoring.run import MonitorConfig, build_reference, monitor

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    log = traffic.write(traffic.test)
    s3 = boto3.client("s3")
    for f in sorted(log.rglob("part-*.parquet")):
        s3.upload_file(str(f), "mdctr", f"monitor-test/{f.relative_to(log).as_posix()}")
    cfg = MonitorConfig(gx_rows=0)
    ref = build_reference(traffic.prepared, cfg, reference_codes=traffic.codes)
    on_s3 = monitor(Window("s3://mdctr/monitor-test"), ref, cfg)
    local = monitor(Window(str(log)), ref, cfg)
    assert on_s3.rows == local.rows == len(traffic.test)
    assert on_s3.handcrafted.window == local.handcrafted.window and on_s3.breaches == ()
