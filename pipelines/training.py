"""The training DAG: fetch → validate → prepare → mine → ParallelFor(train) → evaluate → register → If → promote.

:func:`build_pipeline` returns the pipeline function with the Kubernetes settings (:mod:`mdctr.k8s`) applied
to every task; ``training_pipeline`` is the default build. Parameter defaults are for a cluster run; the local
runner (:func:`mdctr.pipeline.run_local`) overrides the ones that differ on a laptop.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from components.evaluate import evaluate
from components.fetch_data import fetch_data
from components.mine_domains import mine_domains
from components.plan_runs import plan_runs
from components.prepare_data import prepare_data
from components.promote_model import promote_model
from components.register_model import register_model
from components.train_model import train_model
from components.validate_data import validate_data
from kfp import dsl

from mdctr.k8s import ClusterSettings, configure_tasks

PIPELINE_NAME = "mdctr-training"
PIPELINE_DESCRIPTION = (
    "Multi-domain CTR: fetch (DVC) → validate (GX) → prepare → mine domains (VQ-VAE) → train every model × "
    "domain source × seed at a matched FLOP budget → leaderboard → register (MLflow) → promote if better."
)
#: how many training tasks run at once on the cluster (the local runner runs at most 2 anyway)
TRAIN_PARALLELISM = 8


class TrainingOutputs(NamedTuple):
    """What a run returns: the gate decision, the winning entry and the registration (version, URI, gate)."""

    decision: str
    winner: str
    registration: dsl.Artifact


class PipelineDefaults(NamedTuple):
    """Default parameter values compiled into the pipeline (all of them editable in the Kubeflow UI)."""

    models: list[str]
    domain_sources: list[str]
    seeds: list[int]
    flop_budget: str


def default_parameters() -> PipelineDefaults:
    """Models and domain sources from the registry: the single source of truth for what can be trained."""
    from mdctr.models import DOMAIN_SOURCES, model_names
    from mdctr.routing import FLOP_BUDGET_DEFAULT

    return PipelineDefaults(
        models=model_names(),
        domain_sources=list(DOMAIN_SOURCES),
        seeds=[0, 1, 2],
        flop_budget=FLOP_BUDGET_DEFAULT,
    )


def build_pipeline(settings: ClusterSettings | None = None) -> Callable[..., Any]:
    """The training pipeline with ``settings`` (secrets, pull policy, resources, GPU) on every task."""
    settings = settings or ClusterSettings()
    defaults = default_parameters()
    default_models, default_sources, default_seeds, default_budget = defaults

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def training_pipeline(
        dataset: str = "ml-1m",
        dataset_options: str = "{}",
        data_rev: str = "HEAD",
        data_repo: str = "",
        split: str = "random",
        split_seed: int = 0,
        models: list = default_models,
        domain_sources: list = default_sources,
        seeds: list = default_seeds,
        flop_budget: str = default_budget,
        epochs: int = 5,
        train_options: str = "{}",
        miner_options: str = "{}",
        tracking_uri: str = "",
        promotion_tolerance: float = 0.002,
        serving_namespace: str = "mdctr",
    ) -> TrainingOutputs:
        fetch = fetch_data(
            dataset=dataset,
            dataset_options=dataset_options,
            data_rev=data_rev,
            data_repo=data_repo,
            tracking_uri=tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        validate = validate_data(
            dataset=dataset,
            dataset_options=dataset_options,
            tracking_uri=tracking_uri,
            parent_run_id=fetch.outputs["Output"],
            raw=fetch.outputs["raw"],
        )
        prepare = prepare_data(
            dataset=dataset,
            dataset_options=dataset_options,
            split=split,
            split_seed=split_seed,
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
                prepared=prepare.outputs["prepared"],
                domains=mine.outputs["domains"],
            )
        evaluation = evaluate(
            tracking_uri=tracking_uri,
            parent_run_id=fetch.outputs["Output"],
            results=dsl.Collected(train.outputs["results"]),
            bundles=dsl.Collected(train.outputs["bundle"]),
        )
        register = register_model(
            tracking_uri=tracking_uri,
            parent_run_id=fetch.outputs["Output"],
            tolerance=promotion_tolerance,
            winner=evaluation.outputs["winner"],
            prepared=prepare.outputs["prepared"],
        )
        with dsl.If(register.outputs["Output"] == "promote", name="gate-passed"):
            promote = promote_model(
                tracking_uri=tracking_uri,
                serving_namespace=serving_namespace,
                registration=register.outputs["registration"],
            )
        configure_tasks(
            [fetch, validate, prepare, mine, plan, train, evaluation, register, promote],
            settings,
            heavy=[mine, train],
        )
        # Read by the local runner (and shown in the KFP UI). The registration names the version and its URI,
        # which is the champion's exactly when decision == "promote".
        return TrainingOutputs(
            decision=register.outputs["Output"],
            winner=evaluation.outputs["Output"],
            registration=register.outputs["registration"],
        )

    return training_pipeline


training_pipeline = build_pipeline()
