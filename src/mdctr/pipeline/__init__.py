"""Compile, submit and run the training pipeline (``pipelines/training.py``).

* :mod:`~mdctr.pipeline.arguments`: :class:`PipelineArguments`, every pipeline parameter with the default
  compiled into the pipeline; the CLI, :func:`run_local` and :func:`submit` take one.
* :mod:`~mdctr.pipeline.build`: :func:`compile_pipeline` writes the KFP IR YAML (it reads no environment
  variable); :func:`submit` uploads a new version of a named pipeline (training or monitoring) to a KFP server
  and starts a run or a recurring run.
* :mod:`~mdctr.pipeline.local`: :func:`run_local` runs the whole DAG on this machine with a KFP local runner,
  set up by :mod:`~mdctr.pipeline.runners` (``subprocess``: the current interpreter; ``docker``: every task in
  the project's image); :mod:`~mdctr.pipeline.progress` reads the runner's output as task events.

This is the one ``mdctr`` package besides :mod:`mdctr.k8s` that imports kfp; steps never do.
"""

from mdctr.pipeline.arguments import LOCAL_DATA_REV, PipelineArguments
from mdctr.pipeline.build import (
    PIPELINES,
    PROJECT_ROOT,
    SubmitResult,
    TrackingURIError,
    check_parameters,
    compile_pipeline,
    load_pipeline,
    pipeline_name,
    require_remote_tracking_uri,
    submit,
)
from mdctr.pipeline.local import (
    DEFAULT_RUNS_DIR,
    LocalRunError,
    LocalRunInterrupted,
    LocalRunResult,
    planned_training_tasks,
    run_local,
)
from mdctr.pipeline.progress import TRAIN_TASK, TaskEvent, failed_task
from mdctr.pipeline.runners import RUNNERS, THREAD_VARIABLES, local_thread_env

__all__ = [
    "DEFAULT_RUNS_DIR",
    "LOCAL_DATA_REV",
    "PIPELINES",
    "PROJECT_ROOT",
    "RUNNERS",
    "THREAD_VARIABLES",
    "TRAIN_TASK",
    "LocalRunError",
    "LocalRunInterrupted",
    "LocalRunResult",
    "PipelineArguments",
    "SubmitResult",
    "TaskEvent",
    "TrackingURIError",
    "check_parameters",
    "compile_pipeline",
    "failed_task",
    "load_pipeline",
    "local_thread_env",
    "pipeline_name",
    "planned_training_tasks",
    "require_remote_tracking_uri",
    "run_local",
    "submit",
]
