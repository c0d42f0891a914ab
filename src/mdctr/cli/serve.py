"""``mdctr serve``: serve a registered model with the production server (v2 protocol + ``/invocations``)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from mdctr.serving.app import (
    DEFAULT_BACKLOG,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    ENV_PREFIX,
    ServeLimits,
)
from mdctr.serving.request import DEFAULT_MAX_ABS_Z, DEFAULT_MAX_ROWS
from mdctr.serving.requestlog import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_QUEUE_ROWS,
    LOG_ENV_PREFIX,
    RequestLogError,
    RequestLogSettings,
)
from mdctr.serving.server import DEFAULT_MODEL_URI, DEFAULT_PORT


def _limit_option(field: str, default: float, help: str, *, low: float | None = 1) -> Any:
    """The option ``--<field>`` (dashes for underscores) of the :class:`ServeLimits` field ``field``, also read from
    ``$MDCTR_SERVE_<FIELD>`` (the variable :meth:`ServeLimits.from_env` reads)."""
    flag = "--" + field.replace("_", "-")
    return typer.Option(default, flag, min=low, envvar=f"{ENV_PREFIX}{field.upper()}", help=help)


def _log_option(field: str, default: float, help: str, *, low: float, high: float | None = None) -> Any:
    """The option ``--log-<field>`` of the :class:`RequestLogSettings` field ``field``, also read from
    ``$MDCTR_SERVE_LOG_<FIELD>`` (the variable :meth:`RequestLogSettings.from_env` reads)."""
    flag = "--log-" + field.replace("_", "-")
    return typer.Option(
        default, flag, min=low, max=high, envvar=f"{LOG_ENV_PREFIX}_{field.upper()}", help=help
    )


ModelUriOpt = typer.Option(
    DEFAULT_MODEL_URI,
    "--model-uri",
    "-m",
    envvar="MODEL_URI",
    help="Model to serve: models:/NAME@ALIAS, runs:/…, s3://…, or a local MLflow model / bundle directory.",
)
HostOpt = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 in a container).")
PortOpt = typer.Option(DEFAULT_PORT, "--port", "-p", envvar="PORT", help="TCP port.")
TrackingUriOpt = typer.Option(
    None,
    "--tracking-uri",
    help="Tracking server or store for models:/ URIs (default: $MLFLOW_TRACKING_URI, else ./mlruns).",
)
WorkersOpt = typer.Option(
    1, "--workers", "-w", min=1, envvar="MDCTR_SERVE_WORKERS", help="uvicorn worker processes."
)
ModelNameOpt = typer.Option(
    "",
    "--model-name",
    envvar="MDCTR_MODEL_NAME",
    help="Name in the v2 routes /v2/models/NAME (default: the registered model's, mdctr-<schema name>).",
)
MaxBodyBytesOpt = _limit_option("max_body_bytes", DEFAULT_MAX_BODY_BYTES, "Larger → 413.")
MaxRowsOpt = _limit_option("max_rows", DEFAULT_MAX_ROWS, "More rows per request → 413.")
MaxAbsZOpt = _limit_option(
    "max_abs_z", DEFAULT_MAX_ABS_Z, "Dense values beyond this many train std devs → 400.", low=None
)
MaxConcurrentOpt = _limit_option(
    "max_concurrent",
    DEFAULT_MAX_CONCURRENT,
    "Requests in flight per worker (bodies being read included); more → 503.",
)
MaxHeaderBytesOpt = _limit_option(
    "max_header_bytes",
    DEFAULT_MAX_HEADER_BYTES,
    "Request line + headers, bytes; more → 431, connection closed.",
)
MaxHeadersOpt = _limit_option("max_headers", DEFAULT_MAX_HEADERS, "Header fields per request; more → 431.")
HeaderTimeoutOpt = _limit_option(
    "header_timeout",
    DEFAULT_HEADER_TIMEOUT_S,
    "Seconds from a request's first byte to the end of its headers; later → 408, closed.",
    low=0.001,
)
BodyTimeoutOpt = _limit_option(
    "body_timeout",
    DEFAULT_BODY_TIMEOUT_S,
    "Seconds from the end of the headers to the end of the body; later → 408, closed.",
    low=0.001,
)
KeepAliveTimeoutOpt = _limit_option(
    "keep_alive_timeout",
    DEFAULT_KEEP_ALIVE_S,
    "Seconds an idle connection (new or between requests) stays open.",
    low=0.001,
)
MaxConnectionsOpt = _limit_option(
    "max_connections",
    DEFAULT_MAX_CONNECTIONS,
    "Open connections per worker; above it new connections get 503 except health probes.",
)
BacklogOpt = _limit_option(
    "backlog", DEFAULT_BACKLOG, "Listen queue length (capped by the kernel's net.core.somaxconn)."
)
TorchThreadsOpt = typer.Option(1, "--torch-threads", min=1, help="Torch intra-op threads per worker.")
LogUriOpt = typer.Option(
    "",
    "--log",
    envvar=LOG_ENV_PREFIX,
    help="Record served requests (raw features, domains, prediction, request id) as parquet under this "
    "directory or s3://BUCKET/PREFIX (date=YYYY-MM-DD/part-*.parquet). Off when empty.",
)
LogSampleOpt = _log_option(
    "sample", 1.0, "Share of requests logged (a hash of the request id decides).", low=0.0, high=1.0
)
LogQueueRowsOpt = _log_option(
    "queue_rows",
    DEFAULT_QUEUE_ROWS,
    "Rows held in memory per worker; requests beyond it are dropped from the log (counted), never delayed.",
    low=1,
)
LogFlushRowsOpt = _log_option(
    "flush_rows", DEFAULT_FLUSH_ROWS, "Write a log file once this many rows are queued.", low=1
)
LogFlushSecondsOpt = _log_option(
    "flush_seconds",
    DEFAULT_FLUSH_SECONDS,
    "Write a log file at least this often while rows are queued (and once more on shutdown).",
    low=0.001,
)
DryRunOpt = typer.Option(False, "--dry-run", help="Resolve the model, print what would run, exit.")


def serve(
    model_uri: str = ModelUriOpt,
    host: str = HostOpt,
    port: int = PortOpt,
    tracking_uri: str | None = TrackingUriOpt,
    workers: int = WorkersOpt,
    model_name: str = ModelNameOpt,
    max_body_bytes: int = MaxBodyBytesOpt,
    max_rows: int = MaxRowsOpt,
    max_abs_z: float = MaxAbsZOpt,
    max_concurrent: int = MaxConcurrentOpt,
    max_header_bytes: int = MaxHeaderBytesOpt,
    max_headers: int = MaxHeadersOpt,
    header_timeout: float = HeaderTimeoutOpt,
    body_timeout: float = BodyTimeoutOpt,
    keep_alive_timeout: float = KeepAliveTimeoutOpt,
    max_connections: int = MaxConnectionsOpt,
    backlog: int = BacklogOpt,
    torch_threads: int = TorchThreadsOpt,
    log_uri: str = LogUriOpt,
    log_sample: float = LogSampleOpt,
    log_queue_rows: int = LogQueueRowsOpt,
    log_flush_rows: int = LogFlushRowsOpt,
    log_flush_seconds: float = LogFlushSecondsOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Serve MODEL_URI: POST /v2/models/NAME/infer (KServe v2) or /invocations ({"dataframe_split": ...}).

    The model is downloaded once (MLflow resolves models:/ and runs:/ URIs), then only its weights and JSON are
    read: nothing from the store is executed. Ctrl-C or SIGTERM stops the server and all its workers.
    """
    limits = ServeLimits(
        max_body_bytes=max_body_bytes,
        max_rows=max_rows,
        max_abs_z=max_abs_z,
        max_concurrent=max_concurrent,
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
        backlog=backlog,
    )
    request_log = _request_log(log_uri, log_sample, log_queue_rows, log_flush_rows, log_flush_seconds)
    _serve_model(
        model_uri,
        tracking_uri=tracking_uri,
        model_name=model_name,
        host=host,
        port=port,
        workers=workers,
        limits=limits,
        torch_threads=torch_threads,
        request_log=request_log,
        dry_run=dry_run,
    )


def _serve_model(
    model_uri: str,
    *,
    tracking_uri: str | None,
    model_name: str,
    host: str,
    port: int,
    workers: int,
    limits: ServeLimits,
    torch_threads: int,
    request_log: RequestLogSettings | None,
    dry_run: bool,
) -> None:
    """Resolve ``model_uri`` to a bundle (a remote model downloaded to a temporary directory, removed however
    the server stops), refuse a bad one, say what will run and, unless ``dry_run``, run the server."""
    from mdctr.serving.bundle import bundle_dir_of
    from mdctr.serving.server import run_server

    version = ""
    download: Path | None = None  # the temporary copy of a remote model, removed however the server stops
    if model_uri.startswith("file://") or ":/" not in model_uri:  # a local MLflow model or bundle directory
        local = Path(model_uri.removeprefix("file://"))
        if not local.is_dir():
            raise typer.BadParameter(f"{local} is not a directory (nor a models:/, runs:/ or s3:// URI)")
        # an MLflow model directory is checked as a downloaded one is; a bare bundle holds only weights + JSON
        bundle = _safe_bundle(local, str(local)) if (local / "MLmodel").is_file() else bundle_dir_of(local)
    else:
        # only remote URIs need MLflow (and the tracking store)
        from mdctr.tracking.pyfunc import download_model
        from mdctr.tracking.setup import default_tracking_uri

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        download = Path(tempfile.mkdtemp(prefix="mdctr-model-"))
    # SIGTERM (Kubernetes, `kill`) must unwind through `finally` like Ctrl-C does: uvicorn restores this handler
    # when it stops and re-raises the signal it caught, which then lands here instead of killing the process.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if download is not None:
            local_dir, version = download_model(model_uri, tracking_uri=uri, dst=download)
            bundle = _safe_bundle(local_dir, f"{model_uri} (version {version})")
        _refuse_bad_bundle(bundle)
        model_name = model_name or _default_model_name(model_uri, bundle)
        typer.echo(
            f"serving {model_uri} (bundle {bundle}) as {model_name!r} on http://{host}:{port} "
            f"(/v2/models/{model_name}/infer, /invocations), {workers} worker(s)"
            + (
                f", logging {request_log.sample:.0%} of requests to {request_log.uri}"
                if request_log is not None
                else ""
            ),
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
            request_log=request_log,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if download is not None:
            shutil.rmtree(download, ignore_errors=True)


def _request_log(
    uri: str, sample: float, queue_rows: int, flush_rows: int, flush_seconds: float
) -> RequestLogSettings | None:
    """The ``--log*`` settings (None without ``--log``), the destination checked once here: a directory that
    cannot be created or an S3 bucket that does not answer ends ``mdctr serve`` with one line, exit status 2."""
    if not uri:
        return None
    try:
        settings = RequestLogSettings(
            uri=uri,
            sample=sample,
            queue_rows=queue_rows,
            flush_rows=flush_rows,
            flush_seconds=flush_seconds,
        )
        from mdctr.serving.requestlog import check_destination

        check_destination(settings.uri)
    except RequestLogError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    return settings


def _safe_bundle(model_dir: Path, label: str) -> Path:
    """The bundle of an MLflow model directory, refused (one line, exit status 2) when it carries anything
    executable — another loader module, a ``code/`` folder, a pickle (the old format) — exactly as the promotion
    gate refuses it (:func:`mdctr.tracking.loading.check_model_dir`), though serving would read only its weights
    and JSON anyway."""
    from mdctr.tracking.loading import UnsafeModelError, check_model_dir

    try:
        return check_model_dir(model_dir, label=label)
    except UnsafeModelError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _refuse_bad_bundle(bundle: Path) -> None:
    """Load the bundle once here, before uvicorn starts: a bad one ends ``mdctr serve`` with one line and exit
    status 2 and the server never answers ready (a worker that failed to load it would print a traceback, and
    a supervisor could restart it forever)."""
    import pickle

    from mdctr.serving.bundle import Predictor
    from mdctr.serving.bundle_schema import BundleError

    try:
        Predictor.load(bundle)
    except (BundleError, pickle.UnpicklingError) as e:  # the latter: weights that are not plain tensors
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        typer.secho(f"error: {bundle}: {first}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _default_model_name(model_uri: str, bundle: Path) -> str:
    """The v2 route name when none is given: the registered model of ``models:/NAME@alias`` or
    ``models:/NAME/version``, else the registered model of the bundle's dataset (``mdctr-<schema name>``)."""
    if model_uri.startswith("models:/"):
        return model_uri[len("models:/") :].split("@")[0].split("/")[0]
    from mdctr.data.encode import FeatureSpec
    from mdctr.serving.bundle import SPEC_FILE
    from mdctr.tracking.names import registered_model_name

    return registered_model_name(FeatureSpec.load(bundle / SPEC_FILE).schema.name)
