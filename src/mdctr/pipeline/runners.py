"""The two KFP local runners :func:`mdctr.pipeline.run_local` drives, and what each needs on this machine.

* ``subprocess``: KFP's SubprocessRunner (no venv; the current interpreter), tasks stopped cleanly by SIGINT or
  SIGTERM (:class:`TaskStopper`), each task's CPU threads its share of the cores (:func:`local_thread_env`).
* ``docker``: KFP's DockerRunner, every task in the project's image as its non-root user on the host's network,
  MLflow a tracking server the containers reach (:func:`docker_tracking_server`), the real exit code of every
  task container (:func:`docker_exit_codes`).

:func:`start_runner` sets either up for one run and returns a :class:`LocalRunner`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdctr.k8s import ClusterSettings
from mdctr.pipeline.build import load_pipeline, require_remote_tracking_uri

log = logging.getLogger(__name__)

#: the KFP local runners :func:`mdctr.pipeline.run_local` drives
RUNNERS = ("subprocess", "docker")
#: tasks the KFP local runner executes at once inside a ParallelFor
LOCAL_PARALLEL_TASKS = 2
#: variables that set the CPU threads of torch / OpenMP / MKL in a task process
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
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


#: seconds a task gets to exit after its SIGINT (a training task marks its MLflow run FAILED) before SIGKILL
STOP_GRACE_S = 15.0


class TaskStopper:
    """While a subprocess run lasts: SIGINT (Ctrl-C) or SIGTERM stops it instead of leaving it half-alive.

    Without this, KFP's local runner turns Ctrl-C into a KeyboardInterrupt in the main thread only: the
    ParallelFor's thread pool still runs every queued training task on shutdown, and the MLflow parent run,
    which only the exit task closes, stays RUNNING for good. Here the first signal is recorded, every running
    task's process group gets one SIGINT (a Python task unwinds and marks its own MLflow run FAILED; SIGKILL
    after :data:`STOP_GRACE_S`), and tasks not started yet fail at once without starting; the runner then
    raises as for any failed task and :func:`mdctr.pipeline.run_local` closes the parent run. A second signal kills the
    running tasks at once. Tasks run in their own session, so a terminal's Ctrl-C reaches them only this way,
    once. Signal handlers can only be set in the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._running: set[Any] = set()
        self._saved: dict[int, Any] = {}
        self._original: Any = None

    def __enter__(self) -> TaskStopper:
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


@contextmanager
def docker_exit_codes() -> Iterator[None]:
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


@dataclass(frozen=True)
class LocalRunner:
    """A KFP local runner set up for one run: ``pipeline`` (the pipeline function, with the runner's task
    settings), KFP's ``task_runner``, the MLflow ``tracking_uri`` the tasks write to and ``store_uri``, where a
    user finds those runs afterwards (a docker run's own tracking server stops with the run; its store stays)."""

    name: str
    pipeline: Callable[..., Any]
    task_runner: Any
    tracking_uri: str
    store_uri: str

    def guard(self) -> contextlib.AbstractContextManager[TaskStopper | None]:
        """While the DAG runs: a subprocess run's :class:`TaskStopper` (SIGINT/SIGTERM stop its tasks; a docker
        run's containers are the engine's and keep the default), a docker run's real container exit codes."""
        return TaskStopper() if self.name == "subprocess" else docker_exit_codes()


def start_runner(
    stack: contextlib.ExitStack,
    name: str,
    *,
    runs_dir: Path,
    tracking_uri: str,
    artifacts_destination: str | None,
) -> LocalRunner:
    """Set up the ``name`` runner for a run under ``runs_dir`` (its pipeline root ``runs_dir/kfp``); what must
    be undone after the run (thread variables, a tracking server, the umask) is entered on ``stack``.
    ``tracking_uri`` '': SQLite under ``./mlruns`` (subprocess), a tracking server started for the run (docker).
    """
    from kfp import local

    if name == "docker":
        return _docker_runner(stack, runs_dir, tracking_uri, artifacts_destination)
    from mdctr.tracking.setup import default_tracking_uri

    stack.enter_context(_environ(local_thread_env()))
    uri = tracking_uri or default_tracking_uri()
    return LocalRunner(name, load_pipeline(), local.SubprocessRunner(use_venv=False), uri, uri)


def _docker_runner(
    stack: contextlib.ExitStack, runs_dir: Path, tracking_uri: str, artifacts_destination: str | None
) -> LocalRunner:
    from kfp import local

    uri = store = tracking_uri
    if not tracking_uri:
        server = stack.enter_context(_docker_tracking_server(runs_dir))
        uri, store = server.url, server.backend_store_uri
        artifacts_destination = artifacts_destination or server.artifacts_destination
    require_remote_tracking_uri(uri, where="runner docker")
    image = _require_image()
    env = {k: os.environ[k] for k in DOCKER_PASSTHROUGH_ENV if os.environ.get(k)}
    if artifacts_destination:
        env["MLFLOW_ARTIFACTS_DESTINATION"] = artifacts_destination
    settings = ClusterSettings(env={**ClusterSettings().env, **local_thread_env(), **env})
    # every task runs as the image's uid 10001: the outputs it writes under the root must be writable by it,
    # and the host creates each task's output directories, so they get mode 777 here
    for directory in (runs_dir / "kfp", runs_dir / "workspace"):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
    stack.enter_context(_umask(0))
    log.info("docker runner: image %s, tracking %s", image, uri)
    task_runner = local.DockerRunner(network_mode="host", user=DOCKER_USER)
    return LocalRunner("docker", load_pipeline(settings), task_runner, uri, store)
