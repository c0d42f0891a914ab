"""The monitoring pipeline RUN by KFP's local runner (SubprocessRunner, this interpreter), as a user's laptop
runs it: ``dsl.importer`` on local paths / ``file://`` URIs of a real prepared dir and domains dir, the monitor
task in its own process. A clean window succeeds with its report and summary; an unseen-id flood fails the run
naming the breach, or, with ``fail_on_breach=False``, succeeds and returns the number of breaches."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mdctr.pipeline import PROJECT_ROOT


@pytest.fixture
def local_kfp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``kfp.local`` set up as ``mdctr.pipeline.run_local`` does for the subprocess runner; the pipeline root."""
    from kfp import local

    monkeypatch.syspath_prepend(str(PROJECT_ROOT))  # pipelines/ and components/ live beside src/
    # the task processes inherit this environment: one thread each, no telemetry, no stray tracking store
    for key, value in {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "kfp"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(tmp_path / "workspace"),
        raise_on_error=True,
    )
    return root


def _run(traffic: Any, log: Path, **params: Any) -> Any:
    from pipelines.monitoring import monitoring_pipeline

    with warnings.catch_warnings():
        # the Kubernetes settings compiled into the task mean nothing to a local runner
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        return monitoring_pipeline(
            log_uri=str(log),
            reference_uri=str(traffic.prepared),  # a plain absolute path
            reference_codes_uri=traffic.codes.as_uri(),  # a file:// URI
            **params,
        )


def _monitor_dir(root: Path) -> Path:
    """The monitor task's outputs of the (only) run under the pipeline root."""
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir / "monitor"


def _flood(traffic: Any) -> Any:
    """The replayed test split with 40% of its first sparse ids replaced by ids never seen in training."""
    window = traffic.test.copy()
    flood = np.random.default_rng(2).random(len(window)) < 0.4
    window.loc[flood, "f0"] = 5_000_000 + np.arange(int(flood.sum()))
    return window


@pytest.mark.integration  # runs the pipeline with KFP's local runner: one process per task
def test_clean_window_succeeds_with_report_and_summary(
    traffic: Any, local_kfp: Path, mlflow_sqlite_uri: str
) -> None:
    from mlflow import MlflowClient

    from mdctr.tracking.monitoring import MONITORING_EXPERIMENT

    task = _run(
        traffic,
        traffic.write(traffic.test),
        feature_max_psi='{"f0": "inf"}',
        feature_max_oov_share='{"f0": 0.5}',
        tracking_uri=mlflow_sqlite_uri,
    )
    assert task.output == 0
    out = _monitor_dir(local_kfp)
    summary = json.loads((out / "summary" / "monitoring_summary.json").read_text())
    assert summary["rows"] == len(traffic.test) and summary["breaches"] == []
    report = (out / "report").read_text()
    assert "<html" in report.lower()
    assert "none: pass --reference-codes" not in report  # the file:// codes were read: a mined reference
    client = MlflowClient(mlflow_sqlite_uri)
    runs = client.search_runs([client.get_experiment_by_name(MONITORING_EXPERIMENT).experiment_id])
    assert [r.data.metrics["window.rows"] for r in runs] == [len(traffic.test)]


@pytest.mark.integration
def test_unseen_id_flood_fails_the_run_naming_the_breach(
    traffic: Any, local_kfp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError, match="FAILURE"):
        _run(traffic, traffic.write(_flood(traffic)))
    printed = capsys.readouterr()
    text = printed.out + printed.err  # the runner prints the task's output, its traceback included
    assert "RuntimeError: monitoring thresholds crossed:" in text
    assert "feature 'f0': OOV share" in text and "feature 'f0': PSI" in text
    out = _monitor_dir(local_kfp)  # the report is written before the task fails
    assert (out / "summary" / "monitoring_report.html").read_text().count("BREACH") >= 1


@pytest.mark.integration
def test_flood_without_fail_on_breach_returns_the_count(traffic: Any, local_kfp: Path) -> None:
    task = _run(traffic, traffic.write(_flood(traffic)), fail_on_breach=False)
    out = _monitor_dir(local_kfp)
    summary = json.loads((out / "summary" / "monitoring_summary.json").read_text())
    assert task.output == len(summary["breaches"]) >= 1
    assert any("feature 'f0': OOV share" in b for b in summary["breaches"])
    # the per-feature limit lifts exactly that breach
    lifted = _run(
        traffic, traffic.write(_flood(traffic)), fail_on_breach=False, feature_max_oov_share='{"f0": "inf"}'
    )
    assert lifted.output == task.output - 1
