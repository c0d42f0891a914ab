"""Compile, submit and run the training pipeline (``pipelines/training.py``).

* :func:`compile_pipeline` writes the KFP IR YAML; it reads no environment variable.
* :func:`submit` uploads a new version of a named pipeline to a KFP server and starts a run (or a recurring
  run) with the given parameters; it submits the training pipeline or the monitoring one
  (``pipelines/monitoring.py``).
* :func:`run_local` runs the whole DAG on this machine with the KFP local runner: ``runner="subprocess"``
  (the current interpreter; MLflow on SQLite by default) or ``runner="docker"`` (every task in the project's
  image as its non-root user, MLflow a tracking server the containers reach); outputs under ``runs/``.

This is the one ``mdctr`` module besides :mod:`mdctr.k8s` that imports kfp; steps never do.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.k8s import ClusterSettings
from mdctr.steps.plan_runs import DEFAULT_DOMAIN_SOURCES

log = logging.getLogger(__name__)

#: the repository root: ``pipelines/`` and ``components/`` live beside ``src/``
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_MODULE = "pipelines.training"
#: the pipelines `submit` (and `compile_pipeline`) can build: name → module under pipelines/
PIPELINES = {"training": PIPELINE_MODULE, "monitoring": "pipelines.monitoring"}
DEFAULT_RUNS_DIR = Path("runs")
#: parameters whose local value differs from the cluster default compiled into the pipeline
LOCAL_DATA_REV = "local"
#: tasks the KFP local runner executes at once inside a ParallelFor
LOCAL_PARALLEL_TASKS = 2
#: variables that set the CPU threads of torch / OpenMP / MKL in a task process
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: the KFP local runners :func:`run_local` drives
RUNNERS = ("subprocess", "docker")
#: the image's non-root user (Dockerfile `useradd --uid 10001`)
DOCKER_USER = "10001"
#: host variables a docker task receives when set (the DVC remote's endpoint and keys; what a cluster's
#: Secrets provide, see mdctr.k8s)
DOCKER_PASSTHROUGH_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_ARTIFACTS_DESTINATION",
)
#: tracking URI schemes a task on another machine (a container, a pod) can reach
REMOTE_TRACKING_SCHEMES = ("http://", "https://", "databricks")


class TrackingURIError(ConfigError):
    """The tracking URI cannot work where the tasks run (empty or local for a cluster or container run)."""


def require_remote_tracking_uri(uri: str | None, *, where: str) -> str:
    """``uri`` if tasks running ``where`` can reach it; else a :class:`TrackingURIError` saying what to set.

    An empty URI makes every pod fall back to its own SQLite store, and a ``sqlite:``/file path exists only on
    the machine that wrote it: later tasks would not find the parent run.
    """
    if not uri or not uri.strip():
        raise TrackingURIError(
            f"{where}: tracking_uri is empty, so every task would write to its own local SQLite store; pass "
            "--tracking-uri http(s)://<your MLflow server> (arguments: tracking_uri=...)"
        )
    if not uri.startswith(REMOTE_TRACKING_SCHEMES):
        raise TrackingURIError(
            f"{where}: tracking_uri {uri!r} is local to this machine; tasks need a tracking server they can "
            "reach: pass --tracking-uri http(s)://<your MLflow server>"
        )
    return uri


def local_thread_env(cpus: int | None = None, parallel: int = LOCAL_PARALLEL_TASKS) -> dict[str, str]:
    """Per-task CPU threads for a local run, for the variables the user has not set.

    Task processes inherit this process's environment. Two training tasks that each start one OpenMP thread
    per core oversubscribe the machine, and spinning OpenMP workers then slow both by up to 10× (seen on
    2 cores: 2,400 instead of 42,000 samples/s). Each task gets its share of the cores instead. On a cluster
    every pod has its own CPU limit, so this applies to local runs only.
    """
    cpus = cpus or os.cpu_count() or 1
    share = str(max(1, cpus // parallel))
    return {var: share for var in THREAD_VARIABLES if var not in os.environ}


def _pipeline_module(pipeline: str = "training") -> Any:
    """Import ``pipelines.<pipeline>`` from the source tree (it is not part of the installed package)."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {sorted(PIPELINES)}, got {pipeline!r}")
    module = PIPELINES[pipeline]
    file = Path(*module.split(".")).with_suffix(".py")
    if not (PROJECT_ROOT / file).is_file():
        raise FileNotFoundError(
            f"{file} not found under {PROJECT_ROOT}; compile from a source checkout (pip install -e .)"
        )
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    return importlib.import_module(module)


def load_pipeline(settings: ClusterSettings | None = None, pipeline: str = "training") -> Callable[..., Any]:
    """The pipeline function; ``settings`` None gives the default build (``training_pipeline``)."""
    module = _pipeline_module(pipeline)
    if settings is None and pipeline == "training":
        return module.training_pipeline
    return module.build_pipeline(settings)


def pipeline_name(pipeline: str = "training") -> str:
    return _pipeline_module(pipeline).PIPELINE_NAME


def compile_pipeline(
    out: Path | str, settings: ClusterSettings | None = None, pipeline: str = "training"
) -> Path:
    """Write the pipeline's (``training`` or ``monitoring``) IR YAML to ``out`` and return the path."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(load_pipeline(settings, pipeline), package_path=str(out))
    log.info("compiled %s to %s", pipeline_name(pipeline), out)
    return out


def check_parameters(package: Path, arguments: Mapping[str, Any]) -> None:
    """Refuse arguments the compiled pipeline in ``package`` does not take, and required ones not given, in one
    ``ConfigError`` line naming them and what the pipeline takes (before a server would reject the run)."""
    import yaml

    spec = next(yaml.safe_load_all(Path(package).read_text()))
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    name = spec["pipelineInfo"]["name"]
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {unknown}; it takes {sorted(params)}")
    missing = sorted(k for k, p in params.items() if not p.get("isOptional") and k not in arguments)
    if missing:
        raise ConfigError(f"{name}: missing required parameter(s) {missing} (--params JSON)")


@dataclass(frozen=True)
class SubmitResult:
    """IDs the KFP server returned."""

    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str | None
    recurring_run_id: str | None


def submit(
    host: str,
    *,
    arguments: Mapping[str, Any] | None = None,
    experiment: str = "mdctr",
    name: str | None = None,
    version: str | None = None,
    namespace: str | None = None,
    pipeline_root: str | None = None,
    cron: str | None = None,
    settings: ClusterSettings | None = None,
    package: Path | str | None = None,
    client: Any | None = None,
    pipeline: str = "training",
) -> SubmitResult:
    """Upload a new pipeline version of ``name`` (creating the pipeline on first use) and start a run.

    ``cron`` makes it a recurring run instead; KFP cron expressions have six fields with a leading *seconds*
    field (``"0 0 3 * * *"`` = daily at 03:00). ``pipeline_root`` (e.g. ``s3://bucket/kfp``) overrides the
    server's default. ``client`` (a ``kfp.Client``) is for tests; otherwise one is made for ``host``.
    ``pipeline``: ``training`` or ``monitoring`` (``pipelines/<it>.py``). Arguments the pipeline does not take,
    required ones missing, a 5-field cron and (training; monitoring when given) a tracking URI pods cannot reach
    are refused before anything reaches the server.
    """
    import tempfile

    import kfp

    params = dict(arguments or {})
    if pipeline == "training" or params.get("tracking_uri"):
        # monitoring is one task: no URI means the MLflow Secret's $MLFLOW_TRACKING_URI, or no MLflow run
        require_remote_tracking_uri(params.get("tracking_uri"), where="submit")
    if cron and len(cron.split()) != 6:
        raise ConfigError(f"--cron {cron!r}: KFP cron needs 6 fields (seconds first), e.g. '0 0 6 * * *'")
    module = _pipeline_module(pipeline)
    if hasattr(module, "check_arguments"):  # the pipeline's own checks of argument values
        module.check_arguments(params)
    name = name or module.PIPELINE_NAME
    version = version or f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(package) if package else compile_pipeline(Path(tmp) / "pipeline.yaml", settings, pipeline)
        check_parameters(path, params)
        client = client or kfp.Client(host=host, namespace=namespace)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            created = client.upload_pipeline(str(path), pipeline_name=name, namespace=namespace)
            pipeline_id = created.pipeline_id
            log.info("created pipeline %s (%s)", name, pipeline_id)
        pv = client.upload_pipeline_version(str(path), version, pipeline_id=pipeline_id)
    exp = client.create_experiment(experiment, namespace=namespace)
    common = dict(
        experiment_id=exp.experiment_id,
        job_name=f"{name} {version}",
        params=params,
        pipeline_id=pipeline_id,
        version_id=pv.pipeline_version_id,
        pipeline_root=pipeline_root,
    )
    if cron:
        rec = client.create_recurring_run(cron_expression=cron, **common)
        log.info("recurring run %s: %s", rec.recurring_run_id, cron)
        return SubmitResult(
            pipeline_id, pv.pipeline_version_id, exp.experiment_id, None, rec.recurring_run_id
        )
    run = client.run_pipeline(**common)
    log.info("started run %s of %s version %s", run.run_id, name, version)
    return SubmitResult(pipeline_id, pv.pipeline_version_id, exp.experiment_id, run.run_id, None)


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
        alias: what a promoted version became, ``champion`` or ``canary`` (the promote task's KServe manifest
            says: a canary's carries ``canaryTrafficPercent``); ``""`` when the gate kept the champion.
        report: the run's final HTML report, with the gate decision (register-model's ``report`` output); the
            evaluate step's copy, written before the gate decided, only when that one is missing.
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

    @property
    def promoted(self) -> bool:
        return self.decision == "promote"


#: the pipeline's training task (one per planned entry, inside the ParallelFor)
TRAIN_TASK = "train-model"


def planned_training_tasks(
    models: Sequence[str] | None,
    domain_sources: Sequence[str] | None,
    seeds: Sequence[int],
    *,
    promote_controls: bool = True,
) -> int:
    """How many ``train-model`` tasks a local run with these arguments starts (the plan_runs step's plan; the
    registry's models and :data:`DEFAULT_DOMAIN_SOURCES` when None). Raises ``KeyError``/``ValueError`` as that
    step does, and ``ValueError`` when every entry routes by a control source and ``promote_controls`` is False
    (evaluate would then have no entry it may register)."""
    from mdctr.routing.sources import CONTROL_SOURCES
    from mdctr.steps.plan_runs import PlanConfig, plan_runs

    defaults = _pipeline_module().default_parameters()
    config = PlanConfig(
        models=list(models or defaults.models),
        domain_sources=list(domain_sources or DEFAULT_DOMAIN_SOURCES),
        seeds=[int(s) for s in seeds],
    )
    entries = plan_runs(config=config).entries
    if not promote_controls and all(e["domain_source"] in CONTROL_SOURCES for e in entries):
        raise ValueError(
            f"every planned entry routes by a control source ({', '.join(CONTROL_SOURCES)}), a baseline that is "
            "never registered: add a model or domain source that is not a control, or pass --promote-controls"
        )
    return len(entries)


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


def run_local(
    *,
    dataset: str = "ml-1m",
    dataset_options: Mapping[str, Any] | None = None,
    data_rev: str = LOCAL_DATA_REV,
    data_repo: str = "",
    data_md5: str = "",
    dvc_remote: str = "",
    source: Path | str | None = None,
    split: str = "random",
    train_window: str = "",
    eval_period: str = "",
    warm_start: str = "",
    warm_start_fallback: str = "error",
    models: Sequence[str] | None = None,
    domain_sources: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    flop_budget: str | None = None,
    epochs: int | None = None,
    train_options: Mapping[str, Any] | None = None,
    miner_options: Mapping[str, Any] | None = None,
    promotion_tolerance: float = 0.002,
    promote_controls: bool = False,
    canary_percent: int = 0,
    tracking_uri: str | None = None,
    runs_dir: Path | str = DEFAULT_RUNS_DIR,
    runner: str = "subprocess",
    artifacts_destination: str | None = None,
    log_file: Path | str | None = None,
    on_task: Callable[[TaskEvent], None] | None = None,
) -> LocalRunResult:
    """Run the full DAG on this machine; pipeline root ``<runs_dir>/kfp``.

    ``runner="subprocess"``: KFP's SubprocessRunner (no venv; the current interpreter), MLflow at
    ``tracking_uri`` (default: SQLite under ``./mlruns``). ``runner="docker"``: KFP's DockerRunner, every task
    in the image :func:`mdctr.image_ref` (build it with ``make image``) as its non-root user on the host's
    network, so it reaches the tracking server and the S3 endpoint as a pod reaches a cluster's; MLflow at
    ``tracking_uri`` (must be a server URL; default: an ``mlflow server`` started for this run with its store
    under ``<runs_dir>/mlflow-docker``, stopped afterwards). ``artifacts_destination``: the tracking server's
    ``--artifacts-destination`` (what promote_model resolves ``mlflow-artifacts:/`` URIs to for the KServe
    manifest; default ``$MLFLOW_ARTIFACTS_DESTINATION``, or that of the server started here).

    ``epochs`` is the maximum per training run (default: the pipeline's, 20): early stopping on validation AUC
    ends a run. ``models`` default to the registry's, ``domain_sources`` to :data:`DEFAULT_DOMAIN_SOURCES` (no
    controls); the pipeline keeps the combinations each model accepts. ``promote_controls``: an entry routed
    by a control source (``random``, ``binned``) may win and be registered and promoted (default: it is shown on
    the leaderboard only). ``canary_percent`` (1-99): a version that passes the gate starts as the canary
    with that share of traffic beside the champion (docs/serving.md, "Canary rollout"). ``data_md5`` + ``dvc_remote`` fetch a data version from the DVC remote without git (the cluster
    default); otherwise ``data_rev`` (default ``local``: copy ``DATASETS_DIR``). ``source``, a local directory
    (your table's, or a datasets root), wins over both (subprocess runner only); ``split``: ``random`` or
    ``time``, with ``train_window``/``eval_period`` for the time split (docs/pipeline.md, "Periods");
    ``warm_start`` (``champion`` or a bundle directory) and ``warm_start_fallback`` (``error``/``cold``) start
    every entry from a trained model (docs/pipeline.md, "Warm start"). Raises ``RuntimeError`` when a task fails (a :class:`LocalRunError` naming the task and its error;
    the failing task's log is above it or in ``log_file``); the exit task has then marked the MLflow parent run
    FAILED.

    ``log_file``: write everything the runner and the tasks print (and this process's logging and warnings
    while the run lasts) to this file instead of the terminal. ``on_task`` receives a :class:`TaskEvent`
    whenever a task starts, finishes or is skipped (from the runner's threads, one call at a time).
    """
    from kfp import local

    reported_uri = None
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if source and runner != "subprocess":
        raise ConfigError(
            f"source {source}: a local directory is read by the subprocess runner only (a container does not "
            "see it); version the data with `mdctr data import` and pass --data-rev or --data-md5"
        )
    defaults = _pipeline_module().default_parameters()
    runs_dir = Path(runs_dir).resolve()
    root = runs_dir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    thread_env = local_thread_env()
    with contextlib.ExitStack() as stack:
        if log_file is not None:
            log_file = Path(log_file).resolve()
            output = stack.enter_context(_quiet_output(log_file, on_task))
        else:
            output = _RunnerOutput(sys.stdout, on_task)
        if runner == "docker":
            if tracking_uri:
                uri = tracking_uri
            else:
                server = stack.enter_context(_docker_tracking_server(runs_dir))
                uri, artifacts_destination = server.url, artifacts_destination or server.artifacts_destination
                # the server stops with the run; its store stays (`mlflow ui --backend-store-uri <it>`)
                reported_uri = server.backend_store_uri
            require_remote_tracking_uri(uri, where="runner docker")
            image = _require_image()
            env = {k: os.environ[k] for k in DOCKER_PASSTHROUGH_ENV if os.environ.get(k)}
            if artifacts_destination:
                env["MLFLOW_ARTIFACTS_DESTINATION"] = artifacts_destination
            settings = ClusterSettings(env={**ClusterSettings().env, **thread_env, **env})
            pipeline = load_pipeline(settings)
            # every task runs as the image's uid 10001: the outputs it writes under the root must be writable
            # by it, and the host creates each task's output directories, so they get mode 777 here
            root.chmod(0o777)
            (runs_dir / "workspace").mkdir(exist_ok=True)
            (runs_dir / "workspace").chmod(0o777)
            stack.enter_context(_umask(0))
            task_runner: Any = local.DockerRunner(network_mode="host", user=DOCKER_USER)
            log.info("docker runner: image %s, tracking %s", image, uri)
        else:
            from mdctr.tracking.setup import default_tracking_uri

            uri = tracking_uri or default_tracking_uri()
            pipeline = load_pipeline()
            task_runner = local.SubprocessRunner(use_venv=False)
            stack.enter_context(_environ(thread_env))
        arguments = {
            "dataset": dataset,
            "dataset_options": json.dumps(dict(dataset_options or {})),
            "data_md5": data_md5,
            "dvc_remote": dvc_remote,
            "data_rev": data_rev,
            "data_repo": data_repo,
            "source": str(Path(source).resolve()) if source else "",
            "split": split,
            "train_window": train_window,
            "eval_period": eval_period,
            "warm_start": warm_start,
            "warm_start_fallback": warm_start_fallback,
            "models": list(models or defaults.models),
            "domain_sources": list(domain_sources or DEFAULT_DOMAIN_SOURCES),
            "seeds": [int(s) for s in seeds],
            "flop_budget": flop_budget or defaults.flop_budget,
            "epochs": defaults.max_epochs if epochs is None else int(epochs),
            "train_options": json.dumps(dict(train_options or {})),
            "miner_options": json.dumps(dict(miner_options or {})),
            "tracking_uri": uri,
            "promotion_tolerance": float(promotion_tolerance),
        }
        if promote_controls:  # otherwise the pipeline's default (False) holds
            arguments["promote_controls"] = True
        if canary_percent:  # otherwise the pipeline's default (0: champion at once) holds
            arguments["canary_percent"] = int(canary_percent)
        log.info("local pipeline run (%s): %s", runner, json.dumps(arguments))
        local.init(
            runner=task_runner,
            pipeline_root=str(root),
            workspace_root=str(runs_dir / "workspace"),
            raise_on_error=True,
        )
        before = {p.name for p in root.iterdir()}
        t0 = time.perf_counter()
        started_ms = int(time.time() * 1000) - 1000
        keep_status = _docker_exit_codes() if runner == "docker" else contextlib.nullcontext()
        # SIGINT/SIGTERM stop the tasks of a subprocess run (docker: the engine's containers keep the default)
        stopper = _TaskStopper() if runner == "subprocess" else None
        with (
            keep_status,
            stopper or contextlib.nullcontext(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(output),
        ):
            # the runner warns that a non-"python" image name may not match the local interpreter; here it does
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            # the Kubernetes resources compiled into every task mean nothing to a local runner
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
            try:
                task = pipeline(**arguments)
            except Exception as e:  # kfp raises a bare RuntimeError naming the failed task
                output.drain()
                task_name, message = _failure(str(e), output)
                if stopper is not None and stopper.signal is not None:
                    name = signal.Signals(stopper.signal).name
                    message = f"stopped by {name} while {task_name} ran"
                    parents = _record_failure(uri, started_ms, task_name, message)
                    raise LocalRunInterrupted(
                        f"local pipeline run ({runner}) {message}",
                        signum=stopper.signal,
                        task=task_name,
                        error=message,
                        log_file=log_file,
                        parent_runs=tuple(parents),
                    ) from e
                _record_failure(uri, started_ms, task_name, message)
                raise LocalRunError(
                    f"local pipeline run ({runner}) failed in task {task_name}: {message}",
                    task=task_name,
                    error=message,
                    log_file=log_file,
                ) from e
            finally:
                output.drain()
        seconds = time.perf_counter() - t0
        created = sorted(p for p in root.iterdir() if p.name not in before and p.is_dir())
        run_dir = created[-1] if created else root
        del (
            task
        )  # the pipeline has no outputs (none may leave an ExitHandler): read register-model's artifact
        registration = json.loads(_task_file(run_dir, "register-model", "registration").read_text())
        leaderboard = _read_leaderboard(run_dir)
        report = _final_report(run_dir)
        alias = _rollout_alias(run_dir) if registration["decision"] == "promote" else ""
        log.info("local pipeline run finished in %.1fs: %s", seconds, registration["decision"])
    return LocalRunResult(
        decision=registration["decision"],
        model_uri=registration["model_uri"],
        winner=registration["winner"],
        leaderboard=leaderboard,
        run_dir=run_dir,
        tracking_uri=reported_uri or uri,
        seconds=seconds,
        log_file=log_file,
        gate_reason=str(registration.get("reason", "")),
        report=report,
        alias=alias,
    )


def _rollout_alias(run_dir: Path) -> str:
    """``canary`` when the promote task's manifest rolls the version out beside the champion, else ``champion``."""
    import yaml

    manifest = yaml.safe_load(_task_file(run_dir, "promote-model", "manifest").read_text())
    return "canary" if "canaryTrafficPercent" in manifest["spec"]["predictor"] else "champion"


@contextlib.contextmanager
def _docker_exit_codes() -> Iterator[None]:
    """Make KFP's DockerRunner read every task container's exit code while the run lasts.

    kfp 2.17 starts task containers with ``auto_remove=True`` and, when the container is already gone at
    ``wait()``, returns exit code 0: a task that fails within a second or two (mine-domains rejecting unknown
    options, seen in CI) was reported SUCCEEDED, and the run failed later in a task that wanted its outputs.
    Here the container is kept until its exit code has been read, then removed.
    """
    from kfp.local import docker_task_handler as handler

    def run_container(
        client: Any, image: str, command: list[str], volumes: dict[str, Any], **kwargs: Any
    ) -> int:
        image = handler.add_latest_tag_if_not_present(image=image)
        if not any(image in (i.tags + i.attrs["RepoDigests"]) for i in client.images.list()):
            print(f"Pulling image {image!r}")
            client.images.pull(image)
        container = client.containers.run(
            image=image, command=command, detach=True, stdout=True, stderr=True, volumes=volumes, **kwargs
        )
        try:
            for line in container.logs(stream=True):
                print(line.decode(), end="")
            return int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)

    original = handler.run_docker_container
    handler.run_docker_container = run_container
    try:
        yield
    finally:
        handler.run_docker_container = original


def _task_file(run_dir: Path, task: str, name: str) -> Path:
    """An output artifact of ``task`` inside a local run directory."""
    path = run_dir / task / name
    if not path.is_file():
        raise RuntimeError(f"local run {run_dir}: {task} wrote no {name!r} artifact")
    return path


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


class _RunnerOutput(io.TextIOBase):
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
def _quiet_output(path: Path, on_task: Callable[[TaskEvent], None] | None) -> Iterator[_RunnerOutput]:
    """Send the runner's output, this process's stderr and its logging to ``path`` while the run lasts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with path.open("w", encoding="utf-8", buffering=1) as f:
        output = _RunnerOutput(f, on_task)
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


def _failure(error: str, output: _RunnerOutput) -> tuple[str, str]:
    """The failed task and its error message: the first task whose finish line said FAILURE and the last
    ``…Error: message`` line that task printed; else :func:`failed_task` and the last such line of all output."""
    if output.failures:
        first = output.failures[0]
        return first.task, first.error or error
    logs = output.text()
    lines = [m for m in (_ERROR_LINE.match(ln) for ln in _ANSI.sub("", logs).splitlines()) if m]
    return failed_task(error, logs), (f"{lines[-1].group(1)}: {lines[-1].group(2)}" if lines else error)


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


#: seconds a task gets to exit after its SIGINT (a training task marks its MLflow run FAILED) before SIGKILL
STOP_GRACE_S = 15.0


class _TaskStopper:
    """While a subprocess run lasts: SIGINT (Ctrl-C) or SIGTERM stops it instead of leaving it half-alive.

    Without this, KFP's local runner turns Ctrl-C into a KeyboardInterrupt in the main thread only: the
    ParallelFor's thread pool still runs every queued training task on shutdown, and the MLflow parent run,
    which only the exit task closes, stays RUNNING for good. Here the first signal is recorded, every running
    task's process group gets one SIGINT (a Python task unwinds and marks its own MLflow run FAILED; SIGKILL
    after :data:`STOP_GRACE_S`), and tasks not started yet fail at once without starting; the runner then
    raises as for any failed task and :func:`run_local` closes the parent run. A second signal kills the
    running tasks at once. Tasks run in their own session, so a terminal's Ctrl-C reaches them only this way,
    once. Signal handlers can only be set in the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._running: set[Any] = set()
        self._saved: dict[int, Any] = {}
        self._original: Any = None

    def __enter__(self) -> _TaskStopper:
        from kfp.local import subprocess_task_handler

        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved[signum] = signal.signal(signum, self._on_signal)
        self._original = subprocess_task_handler.run_local_subprocess
        subprocess_task_handler.run_local_subprocess = self._run_task
        return self

    def __exit__(self, *exc: object) -> None:
        from kfp.local import subprocess_task_handler

        if self._original is not None:
            subprocess_task_handler.run_local_subprocess = self._original
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # runs in the main thread between two bytecodes, possibly inside _run_task: no lock may be taken here
        first = self.signal is None
        if first:
            self.signal = signum
        for process in list(self._running):
            self._stop(process, signal.SIGINT if first else signal.SIGKILL)

    def _stop(self, process: Any, signum: int) -> None:
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)  # the task's shell and the Python process it started
        if signum != signal.SIGKILL:
            threading.Thread(target=self._kill_later, args=(process,), daemon=True).start()

    def _kill_later(self, process: Any) -> None:
        import subprocess

        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def _run_task(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """kfp's ``run_local_subprocess`` (the task's output printed line by line, its exit status returned),
        in a session of its own, refused once the run was stopped."""
        import subprocess

        if self.signal is not None:
            print(f"task not started: the run was stopped by {signal.Signals(self.signal).name}")
            return 1
        env = {**os.environ, **env_vars} if env_vars else None
        with subprocess.Popen(
            full_command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        ) as process:
            self._running.add(process)
            try:
                if self.signal is not None:  # the signal came while it started
                    self._stop(process, signal.SIGINT)
                assert process.stdout is not None
                for line in iter(process.stdout.readline, ""):
                    print(line, end="")
                print("\n")
                return process.wait()
            finally:
                self._running.discard(process)


def _require_image() -> str:
    """The image this code's tasks run in, which must exist in the Docker engine (``DOCKER_HOST``)."""
    import docker

    import mdctr

    image = mdctr.image_ref()
    try:
        client = docker.from_env()
    except docker.errors.DockerException as e:
        raise RuntimeError(
            f'no Docker engine answers ({e}); start one: eval "$(scripts/local-docker start >&2 && '
            'scripts/local-docker env)"'
        ) from None
    with contextlib.closing(client):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise RuntimeError(
                f"image {image} not found in the Docker engine; build it with `make image`"
            ) from None
    return image


@contextmanager
def _docker_tracking_server(runs_dir: Path) -> Iterator[Any]:
    """An ``mlflow server`` for one docker run: SQLite store and artifacts under ``runs_dir/mlflow-docker``,
    artifacts proxied by the server (``--serve-artifacts``), so containers need only its URL."""
    from mdctr.devservices.mlflow_server import start_mlflow_server

    state = runs_dir / "mlflow-docker"
    (state / "artifacts").mkdir(parents=True, exist_ok=True)
    server = start_mlflow_server(f"sqlite:///{state / 'mlflow.db'}", str(state / "artifacts"), log_dir=state)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the task processes of one run, then restore the caller's values."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: the final report (register-model's ``report`` output: the evaluation report with the gate decision), copied
#: into the run directory under a name a browser opens as HTML (a KFP output file has no extension)
FINAL_REPORT = "report.html"


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
