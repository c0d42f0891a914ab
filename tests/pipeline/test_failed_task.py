"""Which task a failed local run is blamed on (the tag a user reads on the MLflow parent run)."""

from __future__ import annotations

from mdctr.pipeline import failed_task

RED, CYAN, OFF = "\x1b[91m", "\x1b[96m", "\x1b[0m"


def _task_line(name: str, status: str) -> str:
    return f"19:23:49.028 - ERROR - Task {CYAN}'{name}'{OFF} finished with status {RED}{status}{OFF}"


def test_the_first_task_the_logs_report_failed_is_blamed() -> None:
    logs = "\n".join(
        [
            _task_line("prepare-data", "SUCCESS"),
            _task_line("mine-domains", "FAILURE"),
            _task_line("train-model", "FAILURE"),
        ]
    )
    # the orchestrator's chain names a loop iteration first: the logs win
    error = f"Inner task failed: {CYAN}'for-loop-2-iteration-0'{OFF} inside {CYAN}'exit-handler-1'{OFF}."
    assert failed_task(error, logs) == "mine-domains"


def test_without_task_logs_the_chain_names_the_first_real_task() -> None:
    error = (
        f"Pipeline 'p' finished with status FAILURE. Inner task failed: {CYAN}'for-loop-2-iteration-0'{OFF} "
        f"inside {CYAN}'train-model'{OFF} inside {CYAN}'exit-handler-1'{OFF}."
    )
    assert failed_task(error, "") == "train-model"
    assert failed_task("Inner task failed: 'exit-handler-1'.", "") == "exit-handler-1"
    assert failed_task("something else broke", "") == "?"
