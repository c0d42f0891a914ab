"""``mdctr serve``: serve a registered model with the production server (v2 protocol + ``/invocations``)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mdctr.serving.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT, ServeLimits
from mdctr.serving.request import DEFAULT_MAX_ABS_Z, DEFAULT_MAX_ROWS
from mdctr.serving.server import DEFAULT_MODEL_URI, DEFAULT_PORT


def serve(
    model_uri: str = typer.Option(
        DEFAULT_MODEL_URI,
        "--model-uri",
        "-m",
        envvar="MODEL_URI",
        help="Model to serve: models:/NAME@ALIAS, runs:/…, s3://…, or a local MLflow model / bundle directory.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", envvar="PORT", help="TCP port."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="Tracking server or store for models:/ URIs (default: $MLFLOW_TRACKING_URI, else ./mlruns).",
    ),
    workers: int = typer.Option(
        1, "--workers", "-w", min=1, envvar="MDCTR_SERVE_WORKERS", help="uvicorn worker processes."
    ),
    model_name: str = typer.Option(
        "",
        "--model-name",
        envvar="MDCTR_MODEL_NAME",
        help="Name in the v2 routes /v2/models/NAME (default: the registered model's, mdctr-<schema name>).",
    ),
    max_body_bytes: int = typer.Option(
        DEFAULT_MAX_BODY_BYTES, "--max-body-bytes", min=1, help="Larger → 413."
    ),
    max_rows: int = typer.Option(DEFAULT_MAX_ROWS, "--max-rows", min=1, help="More rows per request → 413."),
    max_abs_z: float = typer.Option(
        DEFAULT_MAX_ABS_Z, "--max-abs-z", help="Dense values beyond this many train std devs → 400."
    ),
    max_concurrent: int = typer.Option(
        DEFAULT_MAX_CONCURRENT, "--max-concurrent", min=1, help="Requests in flight per worker; more → 503."
    ),
    torch_threads: int = typer.Option(1, "--torch-threads", min=1, help="Torch intra-op threads per worker."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve the model, print what would run, exit."),
) -> None:
    """Serve MODEL_URI: POST /v2/models/NAME/infer (KServe v2) or /invocations ({"dataframe_split": ...}).

    The model is downloaded once (MLflow resolves models:/ and runs:/ URIs), then only its weights and JSON are
    read: nothing from the store is executed. Ctrl-C or SIGTERM stops the server and all its workers.
    """
    from mdctr.serving.bundle import bundle_dir_of
    from mdctr.serving.server import run_server

    version = ""
    if model_uri.startswith("file://") or ":/" not in model_uri:  # a local MLflow model or bundle directory
        local = Path(model_uri.removeprefix("file://"))
        if not local.is_dir():
            raise typer.BadParameter(f"{local} is not a directory (nor a models:/, runs:/ or s3:// URI)")
        bundle = bundle_dir_of(local)
    else:
        # only remote URIs need MLflow (and the tracking store)
        from mdctr.tracking.pyfunc import download_model
        from mdctr.tracking.setup import default_tracking_uri

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        local_dir, version = download_model(model_uri, tracking_uri=uri)
        bundle = bundle_dir_of(local_dir)
    model_name = model_name or _default_model_name(model_uri, bundle)
    limits = ServeLimits(
        max_body_bytes=max_body_bytes, max_rows=max_rows, max_abs_z=max_abs_z, max_concurrent=max_concurrent
    )
    typer.echo(
        f"serving {model_uri} (bundle {bundle}) as {model_name!r} on http://{host}:{port} "
        f"(/v2/models/{model_name}/infer, /invocations), {workers} worker(s)",
        err=True,
    )
    if dry_run:
        return
    run_server(
        bundle,
        host=host,
        port=port,
        workers=workers,
        model_name=model_name,
        model_version=version,
        limits=limits,
        torch_threads=torch_threads,
    )


def _default_model_name(model_uri: str, bundle: Path) -> str:
    """The v2 route name when none is given: the registered model of ``models:/NAME@alias`` or
    ``models:/NAME/version``, else the registered model of the bundle's dataset (``mdctr-<schema name>``)."""
    if model_uri.startswith("models:/"):
        return model_uri[len("models:/") :].split("@")[0].split("/")[0]
    from mdctr.data.encode import FeatureSpec
    from mdctr.serving.bundle import SPEC_FILE
    from mdctr.tracking.names import registered_model_name

    return registered_model_name(FeatureSpec.load(bundle / SPEC_FILE).schema.name)
