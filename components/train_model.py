"""Component: train one (model, domain source, seed) entry at the FLOP budget; bundle + metrics out."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described()
def train_model(
    model_name: str,
    domain_source: str,
    seed: int,
    flop_budget: str,
    epochs: int,
    train_options: str,
    tracking_uri: str,
    train_backend: str,
    train_nodes: int,
    prepared: Input[Dataset],
    domains: Input[Dataset],
    run: Input[Artifact],
    bundle: Output[Model],
    results: Output[Dataset],
    metrics: Output[Metrics],
    warm_start: str = "",
    warm_start_fallback: str = "error",
) -> str:
    """Fit width to ``flop_budget``, train, write the serving bundle and results; return the MLflow run id.

    The MLflow parent run id travels on the ``run`` artifact's metadata (from start_run) rather than as a
    parameter: the KFP 2.17 local runner replaces every task-output parameter entering a ParallelFor with the
    loop item. Not on ``prepared``: that one is cached across pipeline runs, the parent run never is.

    With ``train_backend="trainjob"`` the entry trains in a Kubeflow Trainer TrainJob that reads the inputs'
    URIs and writes next to ``results``' URI; the step copies its outputs back into ``bundle`` and ``results``.
    """
    from mdctr.steps.train_model import TrainStepConfig
    from mdctr.steps.train_model import train_model as step

    result = step(
        prepared_dir=prepared.path,
        domains_dir=domains.path,
        bundle_dir=bundle.path,
        results_dir=results.path,
        config=TrainStepConfig(
            model_name=model_name,
            domain_source=domain_source,
            seed=seed,
            flop_budget=flop_budget,
            epochs=epochs,
            train_options=train_options,
            tracking_uri=tracking_uri,
            parent_run_id=str(run.metadata.get("run_id", "")),
            train_backend=train_backend,
            train_nodes=train_nodes,
            warm_start=warm_start,
            warm_start_fallback=warm_start_fallback,
        ),
        prepared_uri=prepared.uri,
        domains_uri=domains.uri,
        results_uri=results.uri,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    tags = {"model": model_name, "domain_source": domain_source, "seed": seed, "run_id": result.run_id}
    bundle.metadata.update({**tags, "flops": result.flops, "width": result.width})
    results.metadata.update(tags)
    return result.run_id
