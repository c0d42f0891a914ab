"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

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
