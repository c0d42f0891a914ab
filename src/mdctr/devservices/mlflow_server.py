"""A production-style MLflow tracking server for development and tests: PostgreSQL backend store, artifacts in
an S3 bucket, proxied through the server (``--serve-artifacts``) so clients need no bucket credentials.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mdctr.serving.server import ProcessServer, free_port, launch, venv_env

log = logging.getLogger(__name__)


@dataclass
class MlflowServer:
    """A running ``mlflow server``: ``url`` is its tracking URI; :meth:`stop` ends it."""

    url: str
    backend_store_uri: str
    artifacts_destination: str
    process: ProcessServer

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(
    backend_store_uri: str, artifacts_destination: str, *, port: int, workers: int = 1
) -> list[str]:
    """The ``mlflow server`` command line (loopback only)."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination, "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def start_mlflow_server(
    backend_store_uri: str,
    artifacts_destination: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 120.0,
    log_dir: Path | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` on 127.0.0.1 and return once ``/health`` answers.

    Args:
        backend_store_uri: e.g. ``postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow`` (tables are created on
            start; name the psycopg2 driver: SQLAlchemy 2.1 defaults to psycopg 3, which is not installed).
        artifacts_destination: e.g. ``s3://mdctr/mlflow``; the server reads/writes it for every client.
        env: extra variables for the server, typically the S3 endpoint and keys
            (``AWS_ENDPOINT_URL_S3``/``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).
    """
    port = port or free_port()
    extra = {
        # the job-execution worker alone costs ~2 GB of memory and nothing here uses it
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **dict(env or {}),
    }
    # the server process must not inherit a client-side tracking URI pointing elsewhere
    full_env = venv_env(extra)
    full_env.pop("MLFLOW_TRACKING_URI", None)
    proc = launch(
        server_command(backend_store_uri, artifacts_destination, port=port),
        url=f"http://127.0.0.1:{port}",
        health_path="/health",
        env=full_env,
        timeout=timeout,
        log_dir=log_dir,
    )
    log.info(
        "mlflow server at %s (store %s, artifacts %s)", proc.url, backend_store_uri, artifacts_destination
    )
    return MlflowServer(proc.url, backend_store_uri, artifacts_destination, proc)
