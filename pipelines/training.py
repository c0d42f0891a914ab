"""The training DAG: fetch → start run → validate → prepare → mine → ParallelFor(train) → evaluate → register →
If → promote, inside an ExitHandler whose exit task runs last, whatever happened, and closes the MLflow parent
run (FAILED with the failing task when one failed). The pipeline has no outputs (KFP allows none from inside an
ExitHandler): the decision, winner and registered version are in register-model's ``registration`` artifact
(and in MLflow).

:func:`build_pipeline` returns the pipeline function with the Kubernetes settings (:mod:`mdctr.k8s`) applied
to every task; ``training_pipeline`` is the default build. Parameter defaults are
:class:`mdctr.pipeline.PipelineArguments`' (a cluster run's: the data version is the DVC md5 in ``data.dvc`` at
compile time, read from the DVC remote without any git checkout); a local run
(:func:`mdctr.pipeline.run_local`) takes ``PipelineArguments.local()``, which differs in the data and seeds.

Caching is keyed on the data version and parameters only: fetch, prepare, mine and plan are cached (none takes
the run id); every task that writes to MLflow (start_run, validate, train, evaluate, register, promote, the exit
task) never is. fetch and train retry with exponential backoff (S3 or node hiccups).
"""

from collections.abc import Callable
from typing import Any

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
from mdctr.pipeline.arguments import PipelineArguments
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
#: a pipeline parameter as the DAG helpers get it (a KFP channel while the pipeline is compiled)
Param = Any
#: the tasks of one pipeline build by name, for the helpers that connect and configure them
Tasks = dict[str, dsl.PipelineTask]


def build_pipeline(settings: ClusterSettings | None = None) -> Callable[..., Any]:
    """The training pipeline with ``settings`` (secrets, pull policy, resources, GPU) on every task."""
    d = PipelineArguments().kfp_arguments()  # every parameter's default (the one definition)

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    @described()  # every parameter's description in the Kubeflow UI's run form
    def training_pipeline(
        dataset: str = d["dataset"],
        dataset_options: str = d["dataset_options"],
        data_md5: str = d["data_md5"],
        dvc_remote: str = d["dvc_remote"],
        data_rev: str = d["data_rev"],
        data_repo: str = d["data_repo"],
        source: str = d["source"],
        split: str = d["split"],
        split_seed: int = d["split_seed"],
        train_window: str = d["train_window"],
        eval_period: str = d["eval_period"],
        models: list = d["models"],
        domain_sources: list = d["domain_sources"],
        seeds: list = d["seeds"],
        flop_budget: str = d["flop_budget"],
        epochs: int = d["epochs"],
        train_options: str = d["train_options"],
        train_backend: str = d["train_backend"],
        train_nodes: int = d["train_nodes"],
        miner_options: str = d["miner_options"],
        warm_start: str = d["warm_start"],
        warm_start_fallback: str = d["warm_start_fallback"],
        tracking_uri: str = d["tracking_uri"],
        promotion_tolerance: float = d["promotion_tolerance"],
        promote_controls: bool = d["promote_controls"],
        canary_percent: int = d["canary_percent"],
        registered_model: str = d["registered_model"],
        serving_namespace: str = d["serving_namespace"],
    ) -> None:
        """Train every model × domain source × seed at one FLOP budget; register and gate the winner."""
        tasks = {"exit": finish_run(tracking_uri=tracking_uri, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)}
        with dsl.ExitHandler(tasks["exit"], name=EXIT_GROUP):
            tasks |= _data_tasks(
                dataset=dataset,
                dataset_options=dataset_options,
                data_md5=data_md5,
                dvc_remote=dvc_remote,
                data_rev=data_rev,
                data_repo=data_repo,
                source=source,
                split=split,
                split_seed=split_seed,
                train_window=train_window,
                eval_period=eval_period,
                miner_options=miner_options,
                tracking_uri=tracking_uri,
            )
            tasks |= _train_tasks(
                tasks,
                models=models,
                domain_sources=domain_sources,
                seeds=seeds,
                flop_budget=flop_budget,
                epochs=epochs,
                train_options=train_options,
                tracking_uri=tracking_uri,
                train_backend=train_backend,
                train_nodes=train_nodes,
                warm_start=warm_start,
                warm_start_fallback=warm_start_fallback,
            )
            tasks |= _decision_tasks(
                tasks,
                tracking_uri=tracking_uri,
                promote_controls=promote_controls,
                promotion_tolerance=promotion_tolerance,
                registered_model=registered_model,
                serving_namespace=serving_namespace,
                canary_percent=canary_percent,
            )
        _configure(tasks, settings or ClusterSettings())

    return training_pipeline


def _data_tasks(
    *,
    dataset: Param,
    dataset_options: Param,
    data_md5: Param,
    dvc_remote: Param,
    data_rev: Param,
    data_repo: Param,
    source: Param,
    split: Param,
    split_seed: Param,
    train_window: Param,
    eval_period: Param,
    miner_options: Param,
    tracking_uri: Param,
) -> Tasks:
    """fetch → start_run → validate → prepare → mine: the data version, the MLflow parent run, the prepared
    splits and the mined domains."""
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
    mine = mine_domains(miner_options=miner_options, seed=split_seed, prepared=prepare.outputs["prepared"])
    return {"fetch": fetch, "start": start, "validate": validate, "prepare": prepare, "mine": mine}


def _train_tasks(
    tasks: Tasks,
    *,
    models: Param,
    domain_sources: Param,
    seeds: Param,
    flop_budget: Param,
    epochs: Param,
    train_options: Param,
    tracking_uri: Param,
    train_backend: Param,
    train_nodes: Param,
    warm_start: Param,
    warm_start_fallback: Param,
) -> Tasks:
    """plan → ParallelFor(train): one train task per (model, domain source, seed) on the data ``tasks`` made."""
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
            prepared=tasks["prepare"].outputs["prepared"],
            domains=tasks["mine"].outputs["domains"],
            run=tasks["start"].outputs["run"],
        )
    return {"plan": plan, "train": train}


def _decision_tasks(
    tasks: Tasks,
    *,
    tracking_uri: Param,
    promote_controls: Param,
    promotion_tolerance: Param,
    registered_model: Param,
    serving_namespace: Param,
    canary_percent: Param,
) -> Tasks:
    """evaluate (the leaderboard of every train task) → register the winner → If(gate passed) → promote."""
    parent_run_id = tasks["start"].outputs["Output"]
    evaluation = evaluate(
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        results=dsl.Collected(tasks["train"].outputs["results"]),
        bundles=dsl.Collected(tasks["train"].outputs["bundle"]),
        domains=tasks["mine"].outputs["domains"],
        promote_controls=promote_controls,
    )
    register = register_model(
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        tolerance=promotion_tolerance,
        registered_model=registered_model,
        winner=evaluation.outputs["winner"],
        prepared=tasks["prepare"].outputs["prepared"],
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
    return {"evaluation": evaluation, "register": register, "promote": promote}


def _configure(tasks: Tasks, settings: ClusterSettings) -> None:
    """Retries, caching, the TrainJob settings and ``settings`` (:func:`mdctr.k8s.configure_tasks`) on
    ``tasks``."""
    for name in ("fetch", "train"):
        tasks[name].set_retry(**RETRIES)
    # these write to MLflow: once per pipeline run
    for name in ("exit", "start", "validate", "train", "evaluation", "register", "promote"):
        tasks[name].set_caching_options(enable_caching=False)
    # the TrainJobs a train task creates (train_backend=trainjob) run with the pipeline's image and settings
    tasks["train"].set_env_variable(SETTINGS_ENV, job_settings_json(settings, mdctr.image_ref()))
    configure_tasks(tasks.values(), settings, heavy=[tasks["mine"], tasks["train"]])


training_pipeline = build_pipeline()
