"""Integration: `mdctr pipeline run` as a user runs it, without a terminal (output piped), on tiny synthetic
data: a few lines per run on the terminal, the KFP runner's details in the log file whose path it prints, and a
failing task named with its error and no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mdctr.evaluation.report import GATE_PENDING

pytestmark = pytest.mark.integration

MDCTR = Path(sys.executable).with_name("mdctr")
#: what `make run` may print on success (issue 17)
MAX_LINES = 60


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
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
        f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "--runs-dir",
        str(tmp_path / "runs"),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # stdout and stderr together, as a terminal shows them; a pipe, so no progress bar
    return subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def _log_file(output: str) -> Path:
    paths = re.findall(r"full log: (\S+\.log)", output)
    assert paths, f"no log path printed in:\n{output}"
    assert len(set(paths)) == 1, paths
    return Path(paths[0])


@pytest.mark.timeout(700)
def test_a_successful_run_prints_a_line_per_task_and_logs_the_rest(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert len(lines) <= MAX_LINES, done.stdout
    # the log path is printed first and last, and lies in the runs directory
    log_file = _log_file(done.stdout)
    assert "full log:" in lines[0] and lines[-1] == f"full log: {log_file}"
    assert log_file.parent == (tmp_path / "runs" / "logs").resolve()
    # one line per task with its status and seconds; the training task names its entry
    for task in ("fetch-data", "validate-data", "prepare-data", "mine-domains", "evaluate", "register-model"):
        assert re.search(rf"^\s+{task}\s+success\s+\d+\.\ds$", done.stdout, re.M), task
    assert re.search(r"^\s+train-model 1/1\s+success\s+\d+\.\ds\s+dnn/none seed 0$", done.stdout, re.M)
    assert re.search(r"^\s+1\s+dnn/none\s+0\.\d{4}\s+0\.\d{4} \[", done.stdout, re.M)  # the leaderboard row
    assert "winner: dnn/none" in done.stdout and "gate: promote" in done.stdout
    # the report it names is the final one: the gate's decision filled in, not "decided after evaluation"
    report = Path(re.search(r"^report: (\S+)$", done.stdout, re.M).group(1))
    assert report.name == "report.html" and report.parent.parent == (tmp_path / "runs" / "kfp").resolve()
    page = report.read_text()
    assert "<b>promote</b>: " in page and GATE_PENDING not in page
    # none of the runner's internals reach the terminal; all of them are in the log
    log = log_file.read_text()
    for internal in ("KFP Executor", "executor_input", "expression selector", "Streamed logs"):
        assert internal not in done.stdout, internal
        assert internal in log, internal
    assert "Task 'register-model' finished with status SUCCESS" in re.sub(r"\x1b\[[0-9;]*m", "", log)


@pytest.mark.timeout(700)
def test_a_failed_task_is_named_with_its_error_and_no_traceback(tmp_path: Path) -> None:
    done = _run(tmp_path, "--miner-options", '{"no_such_option": 1}')
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stdout, done.stdout
    assert re.search(r"^\s+mine-domains\s+failure\s+\d+\.\ds$", done.stdout, re.M), done.stdout
    failed = next(ln for ln in done.stdout.splitlines() if ln.startswith("failed:"))
    assert failed.startswith(
        "failed: task mine-domains: mdctr.config.ConfigError: miner_options: unknown key"
    )
    assert "'no_such_option'" in failed
    # the traceback is in the log, for whoever needs it
    log = _log_file(done.stdout).read_text()
    assert "Traceback (most recent call last)" in log and "no_such_option" in log
    assert len(done.stdout.splitlines()) <= 20, done.stdout


def test_options_that_are_not_a_json_object_are_refused_before_the_run(tmp_path: Path) -> None:
    done = _run(tmp_path, "--train-options", "[1, 2]")
    assert done.returncode == 2
    assert "--train-options: expected a JSON object" in done.stdout and "Traceback" not in done.stdout
    assert not (tmp_path / "runs" / "kfp").exists()
