"""Helpers shared by CLI modules: dataset source defaults and error reporting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from mdctr.config import ConfigError
from mdctr.schema import SchemaError

DEFAULT_DATASETS_DIR = "../shared/datasets"


def datasets_dir() -> Path:
    """The datasets root: ``$DATASETS_DIR`` or ``../shared/datasets``."""
    return Path(os.environ.get("DATASETS_DIR", DEFAULT_DATASETS_DIR))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected errors (bad data, bad config) into one red line and exit status 2."""
    try:
        yield
    except (SchemaError, ConfigError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
