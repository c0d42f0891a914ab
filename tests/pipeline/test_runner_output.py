"""How a local run's runner output becomes task events: lines assembled per thread, start and finish matched by
thread (two ``train-model`` iterations run at once), the failing task's own error line, skipped groups ignored."""

from __future__ import annotations

import io
import threading

from mdctr.pipeline import TaskEvent
from mdctr.pipeline.progress import RunnerOutput

CYAN, RED, GREEN, OFF = "\x1b[96m", "\x1b[91m", "\x1b[92m", "\x1b[0m"


def _start(name: str) -> str:
    return f"19:28:33.946 - INFO - Executing task {CYAN}'{name}'{OFF}\n"


def _finish(name: str, status: str) -> str:
    colour = GREEN if status == "SUCCESS" else RED
    return f"19:28:42.498 - INFO - Task {CYAN}'{name}'{OFF} finished with status {colour}{status}{OFF}\n"


def _entry(model: str, source: str) -> str:
    return f'        "model_name": "{model}",\n        "domain_source": "{source}",\n        "seed": 0.0,\n'


def test_parallel_tasks_of_one_name_are_told_apart_by_thread() -> None:
    sink = io.StringIO()
    events: list[TaskEvent] = []
    out = RunnerOutput(sink, events.append)
    a_started, b_failed = threading.Event(), threading.Event()

    def task_a() -> None:  # starts first, finishes last, succeeds
        out.write(_start("train-model"))
        out.write(_entry("dnn", "none"))
        a_started.set()
        b_failed.wait(5)
        out.write("    ")  # KFP's indented print writes the indent and the line in two calls
        out.write("epoch 1 done\n")
        out.write(_finish("train-model", "SUCCESS"))

    def task_b() -> None:  # starts second, fails with its own error while A still runs
        a_started.wait(5)
        out.write(_start("train-model"))
        out.write(_entry("hamur", "mined"))
        out.write("    Traceback (most recent call last):\n    ValueError: first\n")
        out.write("    mdctr.config.ConfigError: width does not fit the budget\n")
        out.write(_finish("train-model", "FAILURE"))
        b_failed.set()

    threads = [threading.Thread(target=task_a), threading.Thread(target=task_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    out.write("19:29:00.000 - INFO - Skipping conditional task condition-3 (condition evaluated to False)\n")
    out.write("19:29:00.000 - INFO - Skipping task evaluate: upstream task(s) ['for-loop-2'] failed.\n")
    out.drain()

    finished = [e for e in events if e.finished]
    assert [(e.task, e.status, e.detail) for e in finished] == [
        ("train-model", "FAILURE", "hamur/mined seed 0"),
        ("train-model", "SUCCESS", "dnn/none seed 0"),
        ("evaluate", "SKIPPED", ""),
    ]
    assert finished[0].error == "mdctr.config.ConfigError: width does not fit the budget"
    assert finished[1].error == ""
    assert out.failures == [finished[0]]
    assert [e.task for e in events if not e.finished] == ["train-model", "train-model"]
    # whole lines reach the sink: the indent and its line were written by one thread in two calls
    assert "    epoch 1 done\n" in sink.getvalue().splitlines(keepends=True)


def test_a_line_without_newline_is_written_by_drain() -> None:
    sink = io.StringIO()
    out = RunnerOutput(sink)
    out.write("no newline yet")
    assert sink.getvalue() == ""
    out.drain()
    assert sink.getvalue() == "no newline yet\n" and out.text() == "no newline yet\n"


def test_the_tail_keeps_only_the_last_characters() -> None:
    out = RunnerOutput(io.StringIO(), limit=30)
    for i in range(100):
        out.write(f"line {i:03d}\n")
    assert out.text().splitlines()[-1] == "line 099" and len(out.text()) <= 30
