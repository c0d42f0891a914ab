"""The domain-routing layer: every domain source, what it costs in FLOPs, and the FLOP budget.

* :mod:`mdctr.routing.sources`: :class:`DomainRouting` — which routing domain each row has, where the miner
  sits (outside the model, held inside it, or the model's own VQ-VAE) and what serving must keep.
* :mod:`mdctr.routing.joint`: the ``mined-joint`` source's wrapper (a VQ-VAE trained with any routed model).
* :mod:`mdctr.routing.flops`: the FLOP definition (forward FLOPs per sample of the routed computation).
* :mod:`mdctr.routing.budget`: budgets (``"model:dnn"``, a number) and fitting a model's width to one.

It sits above the models and the miner and below training (see docs/architecture.md), so that training,
evaluation, the steps and serving all route and count the same way.
"""

from mdctr.routing.budget import (
    BudgetError,
    BudgetSpec,
    WidthFit,
    budget_for_data,
    fit_width,
    model_flops,
    parse_budget,
    resolve_budget,
)
from mdctr.routing.flops import FLOP_BUDGET_DEFAULT, count_batch, flops_per_sample
from mdctr.routing.joint import JOINT_KEY, JOINT_SOURCE, JointMined, JointMinerConfig
from mdctr.routing.sources import (
    CONTROL_SOURCES,
    ControlState,
    DomainRouting,
    DomainSourceError,
    Routed,
    build_routed,
    check_domain_source,
    check_routed_config,
    mines_own_domains,
    model_inputs,
)

__all__ = [
    "CONTROL_SOURCES",
    "FLOP_BUDGET_DEFAULT",
    "JOINT_KEY",
    "JOINT_SOURCE",
    "BudgetError",
    "BudgetSpec",
    "ControlState",
    "DomainRouting",
    "DomainSourceError",
    "JointMined",
    "JointMinerConfig",
    "Routed",
    "WidthFit",
    "budget_for_data",
    "build_routed",
    "check_domain_source",
    "check_routed_config",
    "count_batch",
    "fit_width",
    "flops_per_sample",
    "mines_own_domains",
    "model_flops",
    "model_inputs",
    "parse_budget",
    "resolve_budget",
]
