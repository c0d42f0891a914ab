"""Small helpers the steps share: JSON option strings, the code version, the tracking URI convention."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError

#: environment variable the image sets at build time (``docker build --build-arg GIT_SHA=…``)
GIT_SHA_ENV = "MDCTR_GIT_SHA"


def parse_options(text: str | None, *, what: str) -> dict[str, Any]:
    """A JSON object string (pipeline parameters are strings) → dict; ``""`` means ``{}``."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what}: not valid JSON ({e.msg} at position {e.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(value).__name__}: {text!r}")
    return value


def tracking_uri_or_none(uri: str | None) -> str | None:
    """Pipeline parameters cannot be None: ``""`` means "use ``$MLFLOW_TRACKING_URI`` or the default"."""
    return uri or None


def git_sha(root: Path | None = None) -> str:
    """The code version: ``$MDCTR_GIT_SHA`` (set in the image), else ``git rev-parse HEAD`` of the source tree,
    else ``""``."""
    if os.environ.get(GIT_SHA_ENV):
        return os.environ[GIT_SHA_ENV]
    root = root or Path(__file__).resolve().parents[3]
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""
