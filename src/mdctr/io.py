"""Atomic outputs and the one JSON sanitiser.

A step writes into a temporary sibling directory and renames it into place when complete, so that a failure
never leaves a half-written artifact that looks finished. Everything written as JSON goes through
:func:`json_safe`, so that NumPy/torch values, paths and non-finite floats are written the same way
everywhere (non-finite floats as ``null``: strict JSON has no NaN)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(x: Any) -> Any:
    """``x`` as plain JSON values: mappings → dicts with string keys, sequences/arrays/tensors → lists,
    NumPy scalars → Python numbers, non-finite floats → None, anything else unknown → ``str(x)``."""
    if x is None or isinstance(x, str | bool):
        return x
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set | frozenset):
        return [json_safe(v) for v in x]
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # NumPy arrays, torch tensors
        return json_safe(x.tolist())
    return str(x)


@contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target``, on error it is removed and
    ``target`` (if it existed) is left exactly as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a run killed mid-write (SIGKILL skips the cleanup below) leaves its temporary sibling: remove it now
    for stale in (*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the result is an ordinary output directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Write ``json_safe(obj)`` to ``path`` atomically (a temporary sibling renamed into place)."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))
