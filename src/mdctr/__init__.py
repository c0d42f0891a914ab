"""mdctr: multi-domain CTR prediction with mined domains, at matched FLOPs, as a Kubeflow pipeline."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("mdctr")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

#: where the image is pushed; override with $MDCTR_IMAGE_REPOSITORY (your registry) at build and compile time
IMAGE_REPOSITORY = "ghcr.io/mdctr/mdctr"
IMAGE_REPOSITORY_ENV = "MDCTR_IMAGE_REPOSITORY"
#: the image sets it at build time (``--build-arg GIT_SHA``); it has no .git
GIT_SHA_ENV = "MDCTR_GIT_SHA"
#: the Dockerfile targets: every pipeline task runs ``runtime``; the model server runs ``serve``
IMAGE_TARGETS = ("runtime", "serve")
#: what the image is built from: a change here (committed or not) is a different image
IMAGE_INPUTS = ("Dockerfile", "requirements.lock", "pyproject.toml", "README.md", "src")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", *args], cwd=_SOURCE_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


@functools.cache
def _code_tag() -> str:
    """``<sha12>`` of the commit (``-dirty`` when the image's inputs differ from it), from $MDCTR_GIT_SHA inside
    the image, else from the source tree's git; ``nogit`` when neither exists."""
    sha = os.environ.get(GIT_SHA_ENV) or _git("rev-parse", "HEAD")
    if not sha:
        return "nogit"
    if GIT_SHA_ENV in os.environ:
        return sha[:12] if not sha.endswith("-dirty") else sha[:12] + "-dirty"
    dirty = _git("status", "--porcelain", "--", *IMAGE_INPUTS)
    return sha[:12] + ("-dirty" if dirty else "")


def image_ref(target: str = "runtime", *, gpu: bool = False) -> str:
    """The image reference of this code: ``<repository>:<version>-<sha12>[-dirty][-gpu][-serve]``.

    Immutable per commit, so a cluster with pull policy IfNotPresent never runs stale code under a reused tag;
    the one definition used by ``make image`` (scripts/image), every pipeline component and the KServe manifest.
    A ``-dirty`` tag names uncommitted image inputs (local development only: never push one).
    """
    if target not in IMAGE_TARGETS:
        raise ValueError(f"image target must be one of {IMAGE_TARGETS}, got {target!r}")
    repository = os.environ.get(IMAGE_REPOSITORY_ENV) or IMAGE_REPOSITORY
    tag = f"{__version__}-{_code_tag()}" + ("-gpu" if gpu else "") + ("-serve" if target == "serve" else "")
    return f"{repository}:{tag}"


def __getattr__(name: str) -> str:
    # mdctr.IMAGE (the runtime image) stays available, computed on first use so `import mdctr` runs no git.
    if name == "IMAGE":
        return image_ref()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
