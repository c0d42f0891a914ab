"""Serving: the model bundle and its predictor, strict request parsing, the production server (v2 protocol),
and the KServe manifest.

No MLflow import here: the MLflow pyfunc wrapper lives in :mod:`mdctr.tracking.pyfunc`. Names are loaded on
first use, so that importing a light submodule (``mdctr.serving.server`` for the CLI) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BundleInfo": "mdctr.serving.bundle",
    "Predictor": "mdctr.serving.bundle",
    "read_metrics": "mdctr.serving.bundle",
    "save_bundle": "mdctr.serving.bundle",
    "bundle_dir_of": "mdctr.serving.bundle",
    "RequestError": "mdctr.serving.request",
    "ScoringApp": "mdctr.serving.app",
    "ServeLimits": "mdctr.serving.app",
    "kserve_manifest": "mdctr.serving.kserve",
    "write_manifest": "mdctr.serving.kserve",
    "DEFAULT_MODEL_URI": "mdctr.serving.server",
    "ProcessServer": "mdctr.serving.server",
    "ServerError": "mdctr.serving.server",
    "start_model_server": "mdctr.serving.server",
    "start_mlflow_scoring_server": "mdctr.serving.server",
    "run_server": "mdctr.serving.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mdctr.serving' has no attribute {name!r}")
