"""``mdctr serve``: serve a registered model locally with MLflow's scoring server."""

from __future__ import annotations

import os
import shlex
import subprocess

import typer

from mdctr.serving.server import DEFAULT_MODEL_URI, DEFAULT_PORT, serve_command, venv_env


def serve(
    model_uri: str = typer.Option(DEFAULT_MODEL_URI, "--model-uri", "-m", help="Registered model to serve."),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 in a container)."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="Tracking server or store (default: $MLFLOW_TRACKING_URI, else ./mlruns).",
    ),
    workers: int = typer.Option(1, "--workers", "-w", help="uvicorn worker processes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the command instead of running it."),
) -> None:
    """Serve MODEL_URI: POST /invocations with {"dataframe_split": ...} of raw feature columns → pCTR."""
    # resolve the same default store the tracking module uses, without importing mlflow here
    from mdctr.tracking.setup import default_tracking_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    cmd = serve_command(model_uri, port=port, host=host, workers=workers)
    if dry_run:
        typer.echo(f"MLFLOW_TRACKING_URI={shlex.quote(uri)} {shlex.join(cmd)}")
        return
    typer.echo(f"serving {model_uri} on http://{host}:{port}/invocations (tracking {uri})", err=True)
    try:
        rc = subprocess.call(cmd, env=venv_env({"MLFLOW_TRACKING_URI": uri}))
    except KeyboardInterrupt:
        rc = 0
    raise typer.Exit(rc)
