"""Scoring servers as processes (no mlflow import here).

* The production server (:func:`run_server`, what ``mdctr serve`` and the KServe predictor run): uvicorn over
  :class:`mdctr.serving.app.ScoringApp`, the Open Inference Protocol v2 plus ``/invocations`` and ``/ping``.
  :func:`start_model_server` starts it as a child process (tests, benchmark).
* MLflow's own scoring server on the same registered model (:func:`start_mlflow_scoring_server`,
  ``mlflow models serve --env-manager local``): kept working, it calls the same pyfunc ``predict``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from mdctr.serving.app import ENV_PREFIX, ServeLimits
from mdctr.serving.requestlog import LOG_ENV_PREFIX, RequestLogSettings

log = logging.getLogger(__name__)

#: the champion of ML-1M's registered model, ``mdctr.tracking.registered_model_name("ml-1m")`` (serving sits
#: below tracking, so the name is spelt out here; tests/tracking/test_names.py checks the two agree)
DEFAULT_MODEL_URI = "models:/mdctr-ml-1m@champion"
DEFAULT_PORT = 5001


class ServerError(RuntimeError):
    """A server could not be started or did not become healthy."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with its interpreter's bin directory first on PATH.

    MLflow launches ``uvicorn`` by name, so the venv's bin must be on PATH even when the venv is not activated.
    """
    env = dict(os.environ)
    env.update(extra or {})
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def mlflow_serve_command(
    model_uri: str, *, port: int, host: str = "127.0.0.1", workers: int = 1
) -> list[str]:
    """The ``mlflow models serve`` command line for ``model_uri`` (local env manager)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", model_uri, "--env-manager", "local", "-h", host, "-p", str(port), "-w", str(workers),
    ]  # fmt: skip


def wait_healthy(
    url: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None, log_path: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early (with the log tail) if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"server exited with status {proc.returncode} before {url} was healthy:\n{_tail(log_path)}"
            )
        time.sleep(0.2)
    raise ServerError(f"{url} not healthy within {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path | None, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path is not None and path.exists() else ""


@dataclass
class ProcessServer:
    """A server running as a child process in its own session (so ``stop`` ends its workers too).

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:5001``.
        pid: process id of the server's main process.
        log_path: file holding its stdout and stderr.
    """

    url: str
    pid: int
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server's process group (idempotent)."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)

    def __enter__(self) -> ProcessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch(
    cmd: list[str],
    *,
    url: str,
    health_path: str,
    env: Mapping[str, str],
    timeout: float,
    log_dir: Path | None = None,
) -> ProcessServer:
    """Start ``cmd`` in a new session, wait for ``url + health_path`` to answer 200, return the handle."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="mdctr-server-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    with log_path.open("ab") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True
        )
    server = ProcessServer(url=url, pid=proc.pid, log_path=log_path, _proc=proc)
    try:
        wait_healthy(url + health_path, timeout=timeout, proc=proc, log_path=log_path)
    except BaseException:
        server.stop()
        raise
    log.info("server pid %d healthy at %s (log %s)", proc.pid, url, log_path)
    return server


def serve_command(
    model_uri: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    workers: int = 1,
    tracking_uri: str | None = None,
    limits: ServeLimits | None = None,
    request_log: RequestLogSettings | None = None,
) -> list[str]:
    """The ``mdctr serve`` command line (the production server) for ``model_uri``; ``request_log`` adds
    ``--log URI --log-sample RATE …``."""
    limits = limits or ServeLimits()
    cmd = [
        sys.executable, "-c", "from mdctr.cli import app; app()", "serve", "--model-uri", model_uri, "--host", host,
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    for f in fields(limits):  # every limit has the flag --<field with dashes>
        cmd += [f"--{f.name.replace('_', '-')}", repr(getattr(limits, f.name))]
    if request_log is not None:  # every setting has the flag --log[-<field with dashes>]
        for f in fields(request_log):
            value = getattr(request_log, f.name)
            flag = "--log" if f.name == "uri" else f"--log-{f.name.replace('_', '-')}"
            cmd += [flag, value if f.name == "uri" else repr(value)]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    return cmd


def start_model_server(
    model_uri: str = DEFAULT_MODEL_URI,
    *,
    port: int | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
    limits: ServeLimits | None = None,
    request_log: RequestLogSettings | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    log_dir: Path | None = None,
) -> ProcessServer:
    """Serve ``model_uri`` on 127.0.0.1 with the production server (``mdctr serve``); returns once
    ``/v2/health/ready`` answers. ``env`` adds variables (e.g. an S3 endpoint); ``request_log`` turns on the
    served-request log."""
    port = port or free_port()
    cmd = serve_command(
        model_uri,
        port=port,
        workers=workers,
        tracking_uri=tracking_uri,
        limits=limits,
        request_log=request_log,
    )
    return launch(
        cmd,
        url=f"http://127.0.0.1:{port}",
        health_path="/v2/health/ready",
        env=venv_env(env),
        timeout=timeout,
        log_dir=log_dir,
    )


def start_mlflow_scoring_server(
    model_uri: str = DEFAULT_MODEL_URI,
    *,
    port: int | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    log_dir: Path | None = None,
) -> ProcessServer:
    """Serve ``model_uri`` on 127.0.0.1 with MLflow's scoring server; returns once ``/ping`` answers.

    ``tracking_uri`` lets the server resolve ``models:/`` URIs; ``env`` adds variables (e.g. S3 endpoint).
    """
    port = port or free_port()
    extra = dict(env or {})
    if tracking_uri:
        extra["MLFLOW_TRACKING_URI"] = tracking_uri
    return launch(
        mlflow_serve_command(model_uri, port=port, workers=workers),
        url=f"http://127.0.0.1:{port}",
        health_path="/ping",
        env=venv_env(extra),
        timeout=timeout,
        log_dir=log_dir,
    )


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (children inherit it); returns (soft,
    hard) after. Every connection is a file descriptor: at the usual soft limit of 1,024 a worker stops
    accepting around 1,000 connections, long before ``max_connections``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:  # e.g. a sandbox that forbids it: keep serving, say so
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
    return soft, hard


def run_server(
    bundle_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 1,
    model_name: str,
    model_version: str = "",
    limits: ServeLimits | None = None,
    torch_threads: int = 1,
    request_log: RequestLogSettings | None = None,
) -> None:
    """Run the production server in this process until SIGINT/SIGTERM (blocking).

    ``bundle_dir`` is a local model bundle (see :func:`mdctr.serving.bundle.bundle_dir_of`); ``model_name`` is
    the name in the v2 routes (``mdctr serve`` defaults it to the registered model's). With
    ``workers > 1`` uvicorn's supervisor forks the workers and, on SIGTERM/SIGINT, stops them before it exits;
    each worker loads the bundle itself (``app_from_env``). The app answers requests beyond
    ``limits.max_concurrent`` with a JSON 503; the connection limits (header/body deadlines, header size and
    count, idle timeout, connection cap) are enforced by :mod:`mdctr.serving.protocol` under uvicorn.
    ``request_log``: each worker logs the requests it scores there (its own files; flushed on shutdown).
    """
    import uvicorn

    limits = limits or ServeLimits()
    env = {
        f"{ENV_PREFIX}BUNDLE": str(Path(bundle_dir).resolve()),
        f"{ENV_PREFIX}MODEL_NAME": model_name,
        f"{ENV_PREFIX}MODEL_VERSION": model_version,
        f"{ENV_PREFIX}TORCH_THREADS": str(torch_threads),
        **limits.to_env(),
    }
    for name in [k for k in os.environ if k.startswith(LOG_ENV_PREFIX)]:  # no stale log settings
        del os.environ[name]
    if request_log is not None:
        env.update(request_log.to_env())
    os.environ.update(env)  # spawned workers inherit it
    soft, _ = raise_open_file_limit()
    if soft < limits.max_connections + 64:
        log.warning(
            "open-file limit %d is below max_connections %d: connections beyond it fail at accept",
            soft,
            limits.max_connections,
        )
    uvicorn.run(
        "mdctr.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # httptools (llhttp) parsing with our deadlines, header bounds and probe-sparing connection cap
        http="mdctr.serving.protocol:GuardedHttpToolsProtocol",
        # uvicorn's own cap answers every request (probes included) with 503: ours replaces it
        limit_concurrency=None,
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # a float works (call_later)
        backlog=limits.backlog,
        access_log=False,  # one log line per request costs ~10% of a 1-row request
        log_level="info",
        timeout_graceful_shutdown=10,
    )
