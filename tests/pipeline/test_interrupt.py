"""Integration: a local `mdctr pipeline run` stopped by Ctrl-C (SIGINT) or SIGTERM once its MLflow parent run
exists: the parent run is closed (FAILED, naming the signal) instead of staying RUNNING for good, no task
goes on running or starts after the signal, and the command exits 128 + the signal number with one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

MDCTR = Path(sys.executable).with_name("mdctr")


def _tasks_of(runs_dir: Path) -> list[psutil.Process]:
    """Processes still working for a run under ``runs_dir`` (each task's command line names its outputs)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(runs_dir) in part for part in p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.mark.timeout(600)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_closes_its_parent_run_and_its_tasks(tmp_path: Path, signum: int) -> None:
    from mlflow import MlflowClient

    from mdctr.tracking.names import EXPERIMENT, TAG_KFP_RUN_ID

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    runs_dir = (tmp_path / "runs").resolve()
    command = [
        str(MDCTR),
        "pipeline",
        "run",
        "--dataset",
        "synthetic",
        "--dataset-options",
        '{"rows": 3000}',
        "--models",
        "dnn",
        "--domain-sources",
        "none",
        "--epochs",
        "1",
        "--tracking-uri",
        uri,
        "--runs-dir",
        str(runs_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the parent run exists once start-run has finished
            lines.append(line.rstrip("\n"))
            if re.match(r"^\s+start-run\s+success", line):
                break
        else:
            pytest.fail("the run ended before start-run succeeded:\n" + "\n".join(lines))
        proc.send_signal(signum)  # to the command only, as `kill` does; a terminal's Ctrl-C is the same here
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    output = "\n".join(lines)
    name = signal.Signals(signum).name

    assert proc.returncode == 128 + signum, output
    assert "Traceback" not in output, output
    stopped = [ln for ln in lines if ln.startswith(f"stopped by {name} while ")]
    assert len(stopped) == 1 and lines[-1] == stopped[0], output
    assert "marked FAILED; full log: " in stopped[0], output

    client = MlflowClient(uri)
    parents = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`{TAG_KFP_RUN_ID}` != ''",
    )
    assert len(parents) == 1, parents
    parent = parents[0]
    assert parent.info.status == "FAILED" and parent.info.end_time is not None
    assert parent.info.run_id in stopped[0]
    assert f"stopped by {name}" in parent.data.tags["mdctr.failure"]

    # nothing of the run goes on: no task process survives and no later task started after the signal
    time.sleep(1.0)
    assert not _tasks_of(runs_dir), [p.info["cmdline"][:3] for p in _tasks_of(runs_dir)]
    assert not re.search(r"^\s+(train-model|evaluate|register-model)\S*\s+success", output, re.M), output
