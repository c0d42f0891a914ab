"""The training DAG: fetch → start run → validate → prepare → mine → ParallelFor(train) → evaluate → register →
If → promote, inside an ExitHandler whose exit task closes the MLflow parent run (FAILED when anything failed).

:func:`build_pipeline` returns the pipeline function with the Kubernetes settings (:mod:`mdctr.k8s`) applied
to every task; ``training_pipeline`` is the default build. Parameter defaults are for a cluster run: the data
version is the DVC md5 in ``data.dvc`` at compile time, read from the DVC remote without any git checkout. The
local runners (:func:`mdctr.pipeline.run_local`) override the ones that differ on a laptop.

Caching is keyed on the data version and parameters only: fetch, prepare, mine and plan are cached (none takes
the run id); every task that writes to MLflow (start_run, validate, train, evaluate, register, promote, the exit
task) never is. fetch and train retry with exponential backoff (S3 or node hiccups).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from components import described
from components.evaluate import evaluate
from components.fetch_data import fetch_data
from components.finish_run import finish_run
from components.mine_domains import mine_domains
from components.plan_runs import plan_runs
from components.prepare_data import prepare_data
from components.promote_model import promote_model
from components.register_model import register_model
from components.start_run import start_run
from components.train_model import train_model
from components.validate_data import validate_data
from kfp import dsl

import mdctr
from mdctr.k8s import ClusterSettings, configure_tasks
from mdctr.trainjob import SETTINGS_ENV, job_settings_json

PIPELINE_NAME = "mdctr-training"
PIPELINE_DESCRIPTION = (
    "Multi-domain CTR: fetch (DVC) → validate (GX) → prepare → mine domains (VQ-VAE) → train every model × "
    "domain source × seed at a matched FLOP budget → leaderboard → register (MLflow) → promote if better."
)
#: how many training tasks run at once on the cluster (the local runner runs at most 2 anyway)
TRAIN_PARALLELISM = 8
#: retries of fetch (S3) and train (preemptible nodes): 2 more tries after 30 s, then 60 s, capped at 5 min
RETRIES = {"num_retries": 2, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "300s"}
#: the exit handler group (its name shows in the KFP UI and in the exit task's final status)
EXIT_GROUP = "mdctr-run"


class PipelineDefaults(NamedTuple):
    """Default parameter values compiled into the pipeline (all of them editable in the Kubeflow UI)."""

    models: list[str]
    domain_sources: list[str]
    seeds: list[int]
    flop_budget: str
    data_md5: str
    dvc_remote: str
    max_epochs: int


def default_parameters() -> PipelineDefaults:
    """Models and domain sources from the registry: the single source of truth for what can be trained."""
    from mdctr import versioning
    from mdctr.models import model_names
    from mdctr.pipeline import PROJECT_ROOT
    from mdctr.routing import FLOP_BUDGET_DEFAULT
    from mdctr.steps.plan_runs import DEFAULT_DOMAIN_SOURCES
    from mdctr.training import TrainConfig

    # the data version committed with this code: data.dvc's md5 and the DVC remote, read at compile time
    dvc_file = PROJECT_ROOT / versioning.DVC_FILE
    return PipelineDefaults(
        models=model_names(),
        domain_sources=list(DEFAULT_DOMAIN_SOURCES),
        seeds=[0, 1, 2],
        flop_budget=FLOP_BUDGET_DEFAULT,
        data_md5=versioning.data_version_md5(dvc_file) if dvc_file.is_file() else "",
        dvc_remote=versioning.default_remote_url(PROJECT_ROOT),
        # a cap: early stopping on validation AUC ends a run (the trainer's default, one definition)
        max_epochs=TrainConfig().epochs,
    )


def build_pipeline(settings: ClusterSettings | None = None) -> Callable[..., Any]:
    """The training pipeline with ``settings`` (secrets, pull policy, resources, GPU) on every task."""
    settings = settings or ClusterSettings()
    defaults = default_parameters()
    default_models, default_sources, default_seeds, default_budget, default_md5, default_remote, _ = defaults

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    @described()  # every parameter's description in the Kubeflow UI's run form
    def training_pipeline(
        dataset: str = "ml-1m",
        dataset_options: str = "{}",
        data_md5: str = default_md5,
        dvc_remote: str = default_remote,
        data_rev: str = "",
        data_repo: str = "",
        source: str = "",
        split: str = "random",
        split_seed: int = 0,
        train_window: str = "",
        eval_period: str = "",
        models: list = default_models,
        domain_sources: list = default_sources,
        seeds: list = default_seeds,
        flop_budget: str = default_budget,
        epochs: int = defaults.max_epochs,
        train_options: str = "{}",
        train_backend: str = "task",
        train_nodes: int = 2,
        miner_options: str = "{}",
        warm_start: str = "",
        warm_start_fallback: str = "error",
        tracking_uri: str = "",
        promotion_tolerance: float = 0.002,
        promote_controls: bool = False,
        canary_percent: int = 0,
        registered_model: str = "",
        serving_namespace: str = "mdctr",
    ) -> None:
        """Train every model × domain source × seed at one FLOP budget; register and gate the winner."""
        # Runs last, whatever happened: closes the parent run, FAILED with the failing task when one failed.
        exit_task = finish_run(tracking_uri=tracking_uri, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        with dsl.ExitHandler(exit_task, name=EXIT_GROUP):
            fetch = fetch_data(
                dataset=dataset,
                dataset_options=dataset_options,
                data_rev=data_rev,
                data_repo=data_repo,
                data_md5=data_md5,
                dvc_remote=dvc_remote,
                source=source,
            )
            start = start_run(
                dataset=dataset,
                dataset_options=dataset_options,
                data_rev=data_rev,
                data_md5=data_md5,
                tracking_uri=tracking_uri,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                raw=fetch.outputs["raw"],
            )
            validate = validate_data(
                dataset=dataset,
                dataset_options=dataset_options,
                tracking_uri=tracking_uri,
                parent_run_id=start.outputs["Output"],
                raw=fetch.outputs["raw"],
            )
            prepare = prepare_data(
                dataset=dataset,
                dataset_options=dataset_options,
                split=split,
                split_seed=split_seed,
                train_window=train_window,
                eval_period=eval_period,
                raw=fetch.outputs["raw"],
            ).after(validate)
            mine = mine_domains(
                miner_options=miner_options, seed=split_seed, prepared=prepare.outputs["prepared"]
            )
            plan = plan_runs(models=models, domain_sources=domain_sources, seeds=seeds)
            with dsl.ParallelFor(plan.output, parallelism=TRAIN_PARALLELISM) as entry:
                train = train_model(
                    model_name=entry.model,
                    domain_source=entry.domain_source,
                    seed=entry.seed,
                    flop_budget=flop_budget,
                    epochs=epochs,
                    train_options=train_options,
                    tracking_uri=tracking_uri,
                    train_backend=train_backend,
                    train_nodes=train_nodes,
                    warm_start=warm_start,
                    warm_start_fallback=warm_start_fallback,
                    prepared=prepare.outputs["prepared"],
                    domains=mine.outputs["domains"],
                    run=start.outputs["run"],
                )
            evaluation = evaluate(
                tracking_uri=tracking_uri,
                parent_run_id=start.outputs["Output"],
                results=dsl.Collected(train.outputs["results"]),
                bundles=dsl.Collected(train.outputs["bundle"]),
                domains=mine.outputs["domains"],
                promote_controls=promote_controls,
            )
            register = register_model(
                tracking_uri=tracking_uri,
                parent_run_id=start.outputs["Output"],
                tolerance=promotion_tolerance,
                registered_model=registered_model,
                winner=evaluation.outputs["winner"],
                prepared=prepare.outputs["prepared"],
                evaluation_report=evaluation.outputs["report"],
            )
            # "promote" is mdctr.tracking.names.PROMOTE (a test checks it): importing it here would load mlflow
            with dsl.If(register.outputs["Output"] == "promote", name="gate-passed"):
                promote = promote_model(
                    tracking_uri=tracking_uri,
                    serving_namespace=serving_namespace,
                    canary_percent=canary_percent,
                    registration=register.outputs["registration"],
                )
        for task in (fetch, train):
            task.set_retry(**RETRIES)
        for task in (exit_task, start, validate, train, evaluation, register, promote):
            task.set_caching_options(enable_caching=False)  # writes to MLflow: once per pipeline run
        # the TrainJobs a train task creates (train_backend=trainjob) run with the pipeline's image and settings
        train.set_env_variable(SETTINGS_ENV, job_settings_json(settings, mdctr.image_ref()))
        configure_tasks(
            [exit_task, fetch, start, validate, prepare, mine, plan, train, evaluation, register, promote],
            settings,
            heavy=[mine, train],
        )
        # No pipeline outputs: KFP allows none from inside an ExitHandler. The decision, winner and registered
        # version are in register-model's `registration` artifact (and in MLflow).

    return training_pipeline


training_pipeline = build_pipeline()
