"""A local run's progress: what the KFP local runner prints, read as task events (:class:`TaskEvent`), and
which task failed with which error.

The runner prints, per task, ``Executing task 'X'`` when it starts and ``Task 'X' finished with status S`` when
it ends, with the task's own output in between; :class:`RunnerOutput` turns those lines into events for
:func:`mdctr.pipeline.run_local`'s ``on_task``, and :func:`quiet_output` sends them to a log file instead of the
terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the pipeline's training task (one per planned entry, inside the ParallelFor)
TRAIN_TASK = "train-model"


@dataclass(frozen=True)
class TaskEvent:
    """A task of a local run started, finished or was skipped (what :func:`run_local`'s ``on_task`` receives).

    Attributes:
        task: the component task's name (``train-model`` for every ParallelFor iteration).
        status: ``RUNNING`` (started), ``SUCCESS``, ``FAILURE``, ``CACHED`` (outputs reused) or ``SKIPPED``.
        seconds: wall-clock seconds from start to finish (0 unless SUCCESS or FAILURE).
        detail: the entry a training task works on (``dnn/none seed 0``) when its inputs say, else ''.
        error: for FAILURE, the last ``…Error: message`` line the task printed ('' if none).
    """

    task: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status != "RUNNING"


_TASK_STARTED = re.compile(r"Executing task '([^']+)'")
_TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_TASK_CACHED = re.compile(r"Task (\S+) cache hit")
_TASK_SKIPPED = re.compile(r"Skipping (?:conditional )?task ([^\s:]+)")
#: a training task's entry, from the executor input JSON the runner prints at the task's start
_ENTRY_PARAM = re.compile(r'^\s*"(model_name|domain_source|seed)": "?([^",]*)"?,?$')


@dataclass
class _Running:
    task: str
    started: float
    entry: dict[str, str]
    error: str = ""


class RunnerOutput(io.TextIOBase):
    """What the KFP local runner and its tasks print, as whole lines.

    The runner runs each task in a thread (ParallelFor iterations two at a time) and prints the task's output
    from that thread, so lines are assembled per thread, a task's start and finish are matched by thread (two
    ``train-model`` tasks may run at once), and whole lines go to ``sink``. The last ``limit`` characters are
    kept for failure reports; ``on_task`` gets a :class:`TaskEvent` per start, finish and skip.
    """

    def __init__(
        self, sink: Any, on_task: Callable[[TaskEvent], None] | None = None, limit: int = 200_000
    ) -> None:
        self.sink, self.on_task, self.limit = sink, on_task, limit
        self.failures: list[TaskEvent] = []
        self._lock, self._events_lock = threading.Lock(), threading.Lock()
        self._partial: dict[int, str] = {}
        self._running: dict[int, _Running] = {}
        self._tail: list[str] = []
        self._tail_chars = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        thread = threading.get_ident()
        events: list[TaskEvent] = []
        with self._lock:
            *lines, rest = (self._partial.pop(thread, "") + s).split("\n")
            if rest:
                self._partial[thread] = rest
            for line in lines:
                self._emit(thread, line, events)
        self._notify(events)
        return len(s)

    def drain(self) -> None:
        """Write out the lines still waiting for their newline."""
        events: list[TaskEvent] = []
        with self._lock:
            for thread, rest in list(self._partial.items()):
                self._emit(thread, rest, events)
            self._partial.clear()
        self._notify(events)
        self.flush()

    def flush(self) -> None:
        self.sink.flush()

    def text(self) -> str:
        return "".join(self._tail)

    def failure(self, error: str) -> tuple[str, str]:
        """The failed task and its error message: the first task whose finish line said FAILURE and the last
        ``…Error: message`` line that task printed; else :func:`failed_task` and the last such line of all
        output (``error``: the runner's own error)."""
        if self.failures:
            first = self.failures[0]
            return first.task, first.error or error
        logs = self.text()
        lines = [m for m in (_ERROR_LINE.match(ln) for ln in _ANSI.sub("", logs).splitlines()) if m]
        return failed_task(error, logs), (f"{lines[-1].group(1)}: {lines[-1].group(2)}" if lines else error)

    def _emit(self, thread: int, line: str, events: list[TaskEvent]) -> None:
        self.sink.write(line + "\n")
        self._tail.append(line + "\n")
        self._tail_chars += len(line) + 1
        while self._tail_chars > self.limit and len(self._tail) > 1:
            self._tail_chars -= len(self._tail.pop(0))
        event = self._parse(thread, _ANSI.sub("", line))
        if event is not None:
            events.append(event)
            if event.status == "FAILURE":
                self.failures.append(event)

    def _parse(self, thread: int, line: str) -> TaskEvent | None:
        if found := _TASK_STARTED.search(line):
            self._running[thread] = _Running(found.group(1), time.perf_counter(), {})
            return TaskEvent(found.group(1), "RUNNING")
        if found := _TASK_FINISHED.search(line):
            running = self._running.pop(thread, None)
            seconds = time.perf_counter() - running.started if running else 0.0
            entry = running.entry if running else {}
            detail = (
                f"{entry['model_name']}/{entry.get('domain_source', '?')} seed {entry.get('seed', '?')}"
                if "model_name" in entry
                else ""
            )
            return TaskEvent(
                found.group(1), found.group(2), seconds, detail, running.error if running else ""
            )
        if found := _TASK_CACHED.search(line):
            return TaskEvent(found.group(1), "CACHED")
        if (found := _TASK_SKIPPED.search(line)) and not _GROUP.match(found.group(1)):
            return TaskEvent(found.group(1), "SKIPPED")  # a skipped loop or condition is not a task
        running = self._running.get(thread)
        if running is not None:
            if found := _ERROR_LINE.match(line):
                running.error = f"{found.group(1)}: {found.group(2)}"
            elif (found := _ENTRY_PARAM.match(line)) and found.group(1) not in running.entry:
                value = found.group(2)
                running.entry[found.group(1)] = value[:-2] if value.endswith(".0") else value
        return None

    def _notify(self, events: list[TaskEvent]) -> None:
        if self.on_task is None:
            return
        with self._events_lock:  # one call at a time, in the order the lines arrived
            for event in events:
                self.on_task(event)


@contextmanager
def quiet_output(path: Path, on_task: Callable[[TaskEvent], None] | None) -> Iterator[RunnerOutput]:
    """Send the runner's output, this process's stderr and its logging to ``path`` while the run lasts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with path.open("w", encoding="utf-8", buffering=1) as f:
        output = RunnerOutput(f, on_task)
        handler = logging.StreamHandler(output)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
                yield output
        finally:
            output.drain()
            root.handlers[:], level = saved
            root.setLevel(level)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$")


_TASK_FAILED = re.compile(r"Task '([^']+)' finished with status FAILURE")
#: names the local orchestrator gives to groups (exit handler, conditions, loops and their iterations), not tasks
_GROUP = re.compile(r"^(exit-handler|condition|for-loop)-\d+(-iteration-\d+)?$")


def failed_task(error: str, logs: str) -> str:
    """The first component task that failed, from the runner's printed task logs or else its error's chain.

    The printed ``Task 'X' finished with status FAILURE`` lines are in execution order, so the first is the root
    cause; the error's "Inner task failed: 'a' inside 'b'" chain can name a loop iteration before the task that
    broke it, so from it only the first name that is not a group (exit handler, condition, loop) is taken.
    """
    found = _TASK_FAILED.search(_ANSI.sub("", logs))
    if found:
        return found.group(1)
    chain = re.search(r"Inner task failed: (.*?)\.?$", _ANSI.sub("", error))
    names = re.findall(r"'([^']+)'", chain.group(1)) if chain else []
    tasks = [n for n in names if not _GROUP.match(n)]
    return (tasks or names or ["?"])[0]
