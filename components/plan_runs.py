"""Component: the ParallelFor entries (model × accepted domain source × seed), from the model registry."""

from kfp import dsl

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described()
def plan_runs(models: list, domain_sources: list, seeds: list) -> list:
    """Return ``[{"model", "domain_source", "seed"}, …]`` for each combination the model accepts."""
    from mdctr.steps.plan_runs import PlanConfig
    from mdctr.steps.plan_runs import plan_runs as step

    result = step(config=PlanConfig(models=models, domain_sources=domain_sources, seeds=seeds))
    return [dict(entry) for entry in result.entries]
