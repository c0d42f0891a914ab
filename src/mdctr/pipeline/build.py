"""Load, compile and submit the pipelines under ``pipelines/`` (training, monitoring) to a KFP server.

* :func:`compile_pipeline` writes the KFP IR YAML; it reads no environment variable.
* :func:`submit` uploads a new version of a named pipeline to a KFP server and starts a run (or a recurring
  run) with the given parameters; it submits the training pipeline or the monitoring one
  (``pipelines/monitoring.py``).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.k8s import ClusterSettings
from mdctr.pipeline.arguments import PROJECT_ROOT, PipelineArguments

log = logging.getLogger(__name__)

PIPELINE_MODULE = "pipelines.training"
#: the pipelines `submit` (and `compile_pipeline`) can build: name → module under pipelines/
PIPELINES = {"training": PIPELINE_MODULE, "monitoring": "pipelines.monitoring"}
#: tracking URI schemes a task on another machine (a container, a pod) can reach
REMOTE_TRACKING_SCHEMES = ("http://", "https://", "databricks")


class TrackingURIError(ConfigError):
    """The tracking URI cannot work where the tasks run (empty or local for a cluster or container run)."""


def require_remote_tracking_uri(uri: str | None, *, where: str) -> str:
    """``uri`` if tasks running ``where`` can reach it; else a :class:`TrackingURIError` saying what to set.

    An empty URI makes every pod fall back to its own SQLite store, and a ``sqlite:``/file path exists only on
    the machine that wrote it: later tasks would not find the parent run.
    """
    if not uri or not uri.strip():
        raise TrackingURIError(
            f"{where}: tracking_uri is empty, so every task would write to its own local SQLite store; pass "
            "--tracking-uri http(s)://<your MLflow server> (arguments: tracking_uri=...)"
        )
    if not uri.startswith(REMOTE_TRACKING_SCHEMES):
        raise TrackingURIError(
            f"{where}: tracking_uri {uri!r} is local to this machine; tasks need a tracking server they can "
            "reach: pass --tracking-uri http(s)://<your MLflow server>"
        )
    return uri


def _pipeline_module(pipeline: str = "training") -> Any:
    """Import ``pipelines.<pipeline>`` from the source tree (it is not part of the installed package)."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {sorted(PIPELINES)}, got {pipeline!r}")
    module = PIPELINES[pipeline]
    file = Path(*module.split(".")).with_suffix(".py")
    if not (PROJECT_ROOT / file).is_file():
        raise FileNotFoundError(
            f"{file} not found under {PROJECT_ROOT}; compile from a source checkout (pip install -e .)"
        )
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    return importlib.import_module(module)


def load_pipeline(settings: ClusterSettings | None = None, pipeline: str = "training") -> Callable[..., Any]:
    """The pipeline function; ``settings`` None gives the default build (``training_pipeline``)."""
    module = _pipeline_module(pipeline)
    if settings is None and pipeline == "training":
        return module.training_pipeline
    return module.build_pipeline(settings)


def pipeline_name(pipeline: str = "training") -> str:
    return _pipeline_module(pipeline).PIPELINE_NAME


def compile_pipeline(
    out: Path | str, settings: ClusterSettings | None = None, pipeline: str = "training"
) -> Path:
    """Write the pipeline's (``training`` or ``monitoring``) IR YAML to ``out`` and return the path."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(load_pipeline(settings, pipeline), package_path=str(out))
    log.info("compiled %s to %s", pipeline_name(pipeline), out)
    return out


def check_parameters(package: Path, arguments: Mapping[str, Any]) -> None:
    """Refuse arguments the compiled pipeline in ``package`` does not take, and required ones not given, in one
    ``ConfigError`` line naming them and what the pipeline takes (before a server would reject the run)."""
    import yaml

    spec = next(yaml.safe_load_all(Path(package).read_text()))
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    name = spec["pipelineInfo"]["name"]
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {unknown}; it takes {sorted(params)}")
    missing = sorted(k for k, p in params.items() if not p.get("isOptional") and k not in arguments)
    if missing:
        raise ConfigError(f"{name}: missing required parameter(s) {missing} (--params JSON)")


@dataclass(frozen=True)
class SubmitResult:
    """IDs the KFP server returned."""

    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str | None
    recurring_run_id: str | None


def submit(
    host: str,
    *,
    arguments: PipelineArguments | Mapping[str, Any] | None = None,
    experiment: str = "mdctr",
    name: str | None = None,
    version: str | None = None,
    namespace: str | None = None,
    pipeline_root: str | None = None,
    cron: str | None = None,
    settings: ClusterSettings | None = None,
    package: Path | str | None = None,
    client: Any | None = None,
    pipeline: str = "training",
) -> SubmitResult:
    """Upload a new pipeline version of ``name`` (creating the pipeline on first use) and start a run.

    ``cron`` makes it a recurring run instead; KFP cron expressions have six fields with a leading *seconds*
    field (``"0 0 3 * * *"`` = daily at 03:00). ``pipeline_root`` (e.g. ``s3://bucket/kfp``) overrides the
    server's default. ``client`` (a ``kfp.Client``) is for tests; otherwise one is made for ``host``.
    ``pipeline``: ``training`` or ``monitoring`` (``pipelines/<it>.py``). ``arguments``: a
    :class:`PipelineArguments` (training: every parameter is sent) or the parameters to set by name (the rest
    keep the compiled defaults; the only form for monitoring). Arguments the pipeline does not take,
    required ones missing, a 5-field cron and (training; monitoring when given) a tracking URI pods cannot reach
    are refused before anything reaches the server.
    """
    import tempfile

    import kfp

    params = arguments.kfp_arguments() if isinstance(arguments, PipelineArguments) else dict(arguments or {})
    if pipeline == "training" or params.get("tracking_uri"):
        # monitoring is one task: no URI means the MLflow Secret's $MLFLOW_TRACKING_URI, or no MLflow run
        require_remote_tracking_uri(params.get("tracking_uri"), where="submit")
    if cron and len(cron.split()) != 6:
        raise ConfigError(f"--cron {cron!r}: KFP cron needs 6 fields (seconds first), e.g. '0 0 6 * * *'")
    module = _pipeline_module(pipeline)
    if hasattr(module, "check_arguments"):  # the pipeline's own checks of argument values
        module.check_arguments(params)
    name = name or module.PIPELINE_NAME
    version = version or f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(package) if package else compile_pipeline(Path(tmp) / "pipeline.yaml", settings, pipeline)
        check_parameters(path, params)
        client = client or kfp.Client(host=host, namespace=namespace)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            created = client.upload_pipeline(str(path), pipeline_name=name, namespace=namespace)
            pipeline_id = created.pipeline_id
            log.info("created pipeline %s (%s)", name, pipeline_id)
        pv = client.upload_pipeline_version(str(path), version, pipeline_id=pipeline_id)
    exp = client.create_experiment(experiment, namespace=namespace)
    common = dict(
        experiment_id=exp.experiment_id,
        job_name=f"{name} {version}",
        params=params,
        pipeline_id=pipeline_id,
        version_id=pv.pipeline_version_id,
        pipeline_root=pipeline_root,
    )
    if cron:
        rec = client.create_recurring_run(cron_expression=cron, **common)
        log.info("recurring run %s: %s", rec.recurring_run_id, cron)
        return SubmitResult(
            pipeline_id, pv.pipeline_version_id, exp.experiment_id, None, rec.recurring_run_id
        )
    run = client.run_pipeline(**common)
    log.info("started run %s of %s version %s", run.run_id, name, version)
    return SubmitResult(pipeline_id, pv.pipeline_version_id, exp.experiment_id, run.run_id, None)
