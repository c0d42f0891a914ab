"""Run the training pipeline on this machine with a KFP local runner (:func:`run_local`).

``runner="subprocess"`` runs every task with the current interpreter (MLflow on SQLite by default);
``runner="docker"`` runs every task in the project's image as its non-root user, MLflow a tracking server the
containers reach (:mod:`mdctr.pipeline.runners`). Outputs go under ``runs/``; the result
(:class:`LocalRunResult`) carries the gate's decision, the leaderboard and the final report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.pipeline.arguments import PipelineArguments
from mdctr.pipeline.progress import RunnerOutput, TaskEvent, quiet_output
from mdctr.pipeline.runners import RUNNERS, LocalRunner, TaskStopper, start_runner

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("runs")
#: the final report (register-model's ``report`` output: the evaluation report with the gate decision), copied
#: into the run directory under a name a browser opens as HTML (a KFP output file has no extension)
FINAL_REPORT = "report.html"


@dataclass(frozen=True)
class LocalRunResult:
    """Outcome of :func:`run_local`.

    Attributes:
        decision: the promotion gate's decision (``promote`` or ``keep``).
        model_uri: the registered version's URI (champion when ``decision == "promote"``).
        winner: the leaderboard's best entry.
        leaderboard: the Markdown leaderboard text.
        run_dir: this run's directory under the pipeline root (every task's artifacts).
        tracking_uri: the MLflow store used (for a docker run's own tracking server, its backend store).
        seconds: wall-clock time of the DAG.
        log_file: where the runner's output went (None: it was printed).
        gate_reason: why the gate promoted or kept the champion.
        report: the run's final HTML report, with the gate decision (register-model's ``report`` output); the
            evaluate step's copy, written before the gate decided, only when that one is missing.
        alias: what a promoted version became, ``champion`` or ``canary`` (the promote task's KServe manifest
            says: a canary's carries ``canaryTrafficPercent``); ``""`` when the gate kept the champion.
        leaderboard_table: the evaluate task's ranked entries as JSON (``leaderboard.json``, every entry's
            metrics; the full Markdown table ``leaderboard.md`` beside it); None when evaluate wrote none.
    """

    decision: str
    model_uri: str
    winner: str
    leaderboard: str
    run_dir: Path
    tracking_uri: str
    seconds: float
    log_file: Path | None = None
    gate_reason: str = ""
    report: Path | None = None
    alias: str = ""
    leaderboard_table: Path | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == "promote"


class LocalRunError(RuntimeError):
    """A local run failed: ``task`` (the first that failed), ``error`` (its last ``…Error: message`` line, or
    the runner's error) and ``log_file`` (where the runner's output went; None when it was printed)."""

    def __init__(self, message: str, *, task: str, error: str, log_file: Path | None) -> None:
        super().__init__(message)
        self.task, self.error, self.log_file = task, error, log_file


class LocalRunInterrupted(LocalRunError):
    """A local run stopped by a signal (``signum``: SIGINT, SIGTERM) while ``task`` ran; ``parent_runs``: the
    MLflow parent runs marked FAILED (empty when the run was stopped before start-run opened one)."""

    def __init__(
        self,
        message: str,
        *,
        signum: int,
        task: str,
        error: str,
        log_file: Path | None,
        parent_runs: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, task=task, error=error, log_file=log_file)
        self.signum, self.parent_runs = signum, parent_runs

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process ended by the signal: 128 + its number (130 for SIGINT)."""
        return 128 + int(self.signum)


def planned_training_tasks(args: PipelineArguments) -> int:
    """How many ``train-model`` tasks a local run with ``args`` starts (the plan_runs step's plan). Raises
    ``KeyError``/``ValueError`` as that step does, and ``ValueError`` when every entry routes by a control
    source and ``args.promote_controls`` is False (evaluate would then have no entry it may register)."""
    from mdctr.routing.sources import CONTROL_SOURCES
    from mdctr.steps.plan_runs import PlanConfig, plan_runs

    config = PlanConfig(
        models=list(args.models), domain_sources=list(args.domain_sources), seeds=list(args.seeds)
    )
    entries = plan_runs(config=config).entries
    if not args.promote_controls and all(e["domain_source"] in CONTROL_SOURCES for e in entries):
        raise ValueError(
            f"every planned entry routes by a control source ({', '.join(CONTROL_SOURCES)}), a baseline that is "
            "never registered: add a model or domain source that is not a control, or pass --promote-controls"
        )
    return len(entries)


def run_local(
    args: PipelineArguments,
    *,
    runner: str = "subprocess",
    runs_dir: Path | str = DEFAULT_RUNS_DIR,
    artifacts_destination: str | None = None,
    log_file: Path | str | None = None,
    on_task: Callable[[TaskEvent], None] | None = None,
) -> LocalRunResult:
    """Run the full DAG with ``args`` (:meth:`PipelineArguments.local` for this machine's defaults) on this
    machine; pipeline root ``<runs_dir>/kfp``.

    ``runner="subprocess"``: KFP's SubprocessRunner (no venv; the current interpreter), MLflow at
    ``args.tracking_uri`` (default: SQLite under ``./mlruns``). ``runner="docker"``: KFP's DockerRunner, every
    task in the image :func:`mdctr.image_ref` (build it with ``make image``) as its non-root user on the host's
    network, so it reaches the tracking server and the S3 endpoint as a pod reaches a cluster's; MLflow at
    ``args.tracking_uri`` (must be a server URL; default: an ``mlflow server`` started for this run with its
    store under ``<runs_dir>/mlflow-docker``, stopped afterwards). ``artifacts_destination``: the tracking
    server's ``--artifacts-destination`` (what promote_model resolves ``mlflow-artifacts:/`` URIs to for the
    KServe manifest; default ``$MLFLOW_ARTIFACTS_DESTINATION``, or that of the server started here).
    ``args.source``, a local directory (your table's, or a datasets root), is read by the subprocess runner only.

    Raises ``RuntimeError`` when a task fails (a :class:`LocalRunError` naming the task and its error; the
    failing task's log is above it or in ``log_file``); the exit task has then marked the MLflow parent run
    FAILED. ``log_file``: write everything the runner and the tasks print (and this process's logging and
    warnings while the run lasts) to this file instead of the terminal. ``on_task`` receives a
    :class:`TaskEvent` whenever a task starts, finishes or is skipped (from the runner's threads, one call at a
    time).
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if args.source and runner != "subprocess":
        raise ConfigError(
            f"source {args.source}: a local directory is read by the subprocess runner only (a container does "
            "not see it); version the data with `mdctr data import` and pass --data-rev or --data-md5"
        )
    runs_dir = Path(runs_dir).resolve()
    (runs_dir / "kfp").mkdir(parents=True, exist_ok=True)
    log_file = Path(log_file).resolve() if log_file is not None else None
    with contextlib.ExitStack() as stack:
        if log_file is not None:
            output = stack.enter_context(quiet_output(log_file, on_task))
        else:
            output = RunnerOutput(sys.stdout, on_task)
        local_runner = start_runner(
            stack,
            runner,
            runs_dir=runs_dir,
            tracking_uri=args.tracking_uri,
            artifacts_destination=artifacts_destination,
        )
        source = str(Path(args.source).resolve()) if args.source else ""
        arguments = replace(args, tracking_uri=local_runner.tracking_uri, source=source).kfp_arguments()
        log.info("local pipeline run (%s): %s", runner, json.dumps(arguments))
        run_dir, seconds = _run_dag(local_runner, arguments, runs_dir, output, log_file)
        result = _read_result(run_dir, local_runner.store_uri, seconds, log_file)
        log.info("local pipeline run finished in %.1fs: %s", seconds, result.decision)
    return result


def _run_dag(
    runner: LocalRunner,
    arguments: Mapping[str, Any],
    runs_dir: Path,
    output: RunnerOutput,
    log_file: Path | None,
) -> tuple[Path, float]:
    """Run the pipeline with ``arguments``; its run directory under ``runs_dir/kfp`` and the seconds it took."""
    from kfp import local

    root = runs_dir / "kfp"
    local.init(
        runner=runner.task_runner,
        pipeline_root=str(root),
        workspace_root=str(runs_dir / "workspace"),
        raise_on_error=True,
    )
    before = {p.name for p in root.iterdir()}
    t0 = time.perf_counter()
    started_ms = int(time.time() * 1000) - 1000
    with runner.guard() as stopper, warnings.catch_warnings(), contextlib.redirect_stdout(output):
        # the runner warns that a non-"python" image name may not match the local interpreter; here it does
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        # the Kubernetes resources compiled into every task mean nothing to a local runner
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        try:
            # the pipeline has no outputs (none may leave an ExitHandler): register-model's artifact says
            runner.pipeline(**arguments)
        except Exception as e:  # kfp raises a bare RuntimeError naming the failed task
            output.drain()
            raise _run_error(str(e), output, runner, stopper, started_ms, log_file) from e
        finally:
            output.drain()
    seconds = time.perf_counter() - t0
    created = sorted(p for p in root.iterdir() if p.name not in before and p.is_dir())
    return (created[-1] if created else root), seconds


def _run_error(
    error: str,
    output: RunnerOutput,
    runner: LocalRunner,
    stopper: TaskStopper | None,
    started_ms: int,
    log_file: Path | None,
) -> LocalRunError:
    """The error a failed run raises, its failure recorded on the MLflow parent run: the first failed task and
    its error line; :class:`LocalRunInterrupted` when a signal stopped the run."""
    task, message = output.failure(error)
    if stopper is not None and stopper.signal is not None:
        message = f"stopped by {signal.Signals(stopper.signal).name} while {task} ran"
        parents = _record_failure(runner.tracking_uri, started_ms, task, message)
        return LocalRunInterrupted(
            f"local pipeline run ({runner.name}) {message}",
            signum=stopper.signal,
            task=task,
            error=message,
            log_file=log_file,
            parent_runs=tuple(parents),
        )
    _record_failure(runner.tracking_uri, started_ms, task, message)
    return LocalRunError(
        f"local pipeline run ({runner.name}) failed in task {task}: {message}",
        task=task,
        error=message,
        log_file=log_file,
    )


def _record_failure(tracking_uri: str, started_ms: int, task: str, message: str) -> list[str]:
    """Name the innermost failed task and its exception on this run's MLflow parent run, and mark it FAILED if
    it is still open; returns the ids of the parent runs changed.

    The exit task has already marked the run FAILED, but it only sees the failed exit-handler group; a run
    stopped by a signal had no exit task, so its parent run is closed here.
    """
    from mdctr.tracking.runs import record_failure

    try:
        return record_failure(tracking_uri, started_after_ms=started_ms, failed_task=task, message=message)
    except Exception as e:  # the run failed already; say why the annotation did not work, keep the real error
        log.warning("could not record the failure on the MLflow parent run: %s", e)
        return []


def _read_result(run_dir: Path, store_uri: str, seconds: float, log_file: Path | None) -> LocalRunResult:
    """What a finished run's directory says: register-model's registration, the leaderboard, the report."""
    registration = json.loads(_task_file(run_dir, "register-model", "registration").read_text())
    decision = registration["decision"]
    return LocalRunResult(
        decision=decision,
        model_uri=registration["model_uri"],
        winner=registration["winner"],
        leaderboard=_read_leaderboard(run_dir),
        run_dir=run_dir,
        tracking_uri=store_uri,
        seconds=seconds,
        log_file=log_file,
        gate_reason=str(registration.get("reason", "")),
        report=_final_report(run_dir),
        alias=_rollout_alias(run_dir) if decision == "promote" else "",
        leaderboard_table=_leaderboard_table(run_dir),
    )


def _final_report(run_dir: Path) -> Path | None:
    """``run_dir/report.html``: the run's final report with the gate decision; else (register-model wrote none)
    the evaluate step's copy, which says the gate is "decided after evaluation"; None when neither exists."""
    final = run_dir / "register-model" / "report"
    if final.is_file():
        shutil.copyfile(final, run_dir / FINAL_REPORT)
        return run_dir / FINAL_REPORT
    evaluated = run_dir / "evaluate" / "tables" / "report.html"
    return evaluated if evaluated.is_file() else None


def _read_leaderboard(run_dir: Path) -> str:
    """The evaluate task's Markdown leaderboard inside a local run directory ('' if absent)."""
    path = run_dir / "evaluate" / "leaderboard"
    return path.read_text() if path.is_file() else ""


def _leaderboard_table(run_dir: Path) -> Path | None:
    """The evaluate task's ``leaderboard.json`` inside a local run directory (None if absent)."""
    return next(iter(sorted((run_dir / "evaluate").rglob("leaderboard.json"))), None)


def _rollout_alias(run_dir: Path) -> str:
    """``canary`` when the promote task's manifest rolls the version out beside the champion, else ``champion``."""
    import yaml

    manifest = yaml.safe_load(_task_file(run_dir, "promote-model", "manifest").read_text())
    return "canary" if "canaryTrafficPercent" in manifest["spec"]["predictor"] else "champion"


def _task_file(run_dir: Path, task: str, name: str) -> Path:
    """An output artifact of ``task`` inside a local run directory."""
    path = run_dir / task / name
    if not path.is_file():
        raise RuntimeError(f"local run {run_dir}: {task} wrote no {name!r} artifact")
    return path
