"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Keep third-party tools quiet and offline in every test process.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared datasets root (``$DATASETS_DIR`` or ``../shared/datasets``); the suite requires it."""
    path = Path(os.environ.get("DATASETS_DIR", ROOT.parent / "shared" / "datasets"))
    assert path.is_dir(), f"datasets directory {path} not found; set DATASETS_DIR"
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local S3 server (disk-backed s3rver, bucket ``mdctr``) shared by the session.

    Point clients at it with ``monkeypatch.setenv`` over ``s3_server.env().items()``. Set
    ``MDCTR_S3_BACKEND=moto`` to use the in-memory moto fallback where Node.js is unavailable.
    Tests that stop or restart a server should start their own with ``mdctr.devservices.start_s3``.
    """
    from mdctr.devservices import start_s3

    backend = os.environ.get("MDCTR_S3_BACKEND", "s3rver")
    server = start_s3(tmp_path_factory.mktemp("s3"), backend=backend)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
