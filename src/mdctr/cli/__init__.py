"""The ``mdctr`` command line: one typer app; each area adds its commands from its own module."""

from __future__ import annotations

import logging
import os

import typer

from mdctr.cli import data as _data
from mdctr.cli import models as _models
from mdctr.cli import monitor as _monitor
from mdctr.cli import pipeline as _pipeline
from mdctr.cli import serve as _serve
from mdctr.cli import train as _train

app = typer.Typer(
    help="mdctr: multi-domain CTR prediction workflow.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(_data.app, name="data")
app.add_typer(_pipeline.app, name="pipeline")
app.add_typer(_models.app, name="models")
_train.register(app)
app.command("serve")(_serve.serve)
app.command("monitor")(_monitor.monitor)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for var, value in (
        ("GX_ANALYTICS_ENABLED", "false"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("DVC_NO_ANALYTICS", "1"),
    ):
        os.environ.setdefault(var, value)


__all__ = ["app"]
