"""Fitting a model's width to a FLOP budget.

A budget is either a number (FLOPs per sample) or ``"model:NAME"`` / ``"model:NAME@WIDTH"``: the FLOPs of a
registered model at that width (default 1, i.e. its default sizes) on the same inputs and batch.
:data:`~mdctr.routing.flops.FLOP_BUDGET_DEFAULT` is ``"model:dnn"``.

FLOPs grow monotonically with width, but hidden sizes round to whole units, so FLOPs(width) is a staircase:
:func:`fit_width` brackets the budget by doubling/halving, bisects the width, and finally picks the better of
the two widths either side of the step that crosses the budget.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from mdctr.data.prepare import PreparedData
from mdctr.data.tensors import Batch
from mdctr.models.base import ModelInputs, model_class, model_names
from mdctr.routing.flops import FLOP_BUDGET_DEFAULT, count_batch
from mdctr.routing.sources import DomainRouting

log = logging.getLogger(__name__)

MIN_WIDTH = 1e-3
MAX_WIDTH = 16.0  # ~256× the FLOPs of width 1 for quadratic layers; far wider models are not sensible
_MODEL_SPEC = re.compile(r"^model:([A-Za-z0-9_\-]+)(?:@([0-9.eE+\-]+))?$")


class BudgetError(ValueError):
    """A budget spec cannot be parsed, or a model cannot reach the budget within tolerance."""


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed budget: ``flops`` (a number) or ``model`` at ``width``."""

    flops: float | None = None
    model: str | None = None
    width: float = 1.0

    def __str__(self) -> str:
        if self.model is None:
            return f"{self.flops:g}"
        return f"model:{self.model}" + ("" if self.width == 1.0 else f"@{self.width:g}")


@dataclass(frozen=True)
class WidthFit:
    """Result of :func:`fit_width`: the width, its FLOPs per sample, and |FLOPs − budget| / budget."""

    width: float
    flops: float
    rel_error: float


def parse_budget(spec: str | float | int | BudgetSpec) -> BudgetSpec:
    """``"model:dnn"``, ``"model:dnn@2"``, ``"1.5e5"`` or a number → :class:`BudgetSpec`."""
    if isinstance(spec, BudgetSpec):
        return spec
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        value = float(spec)
    else:
        text = str(spec).strip()
        if m := _MODEL_SPEC.match(text):
            width = float(m.group(2)) if m.group(2) else 1.0
            if not width > 0:
                raise BudgetError(f"budget {spec!r}: width must be > 0")
            return BudgetSpec(model=m.group(1), width=width)
        try:
            value = float(text)
        except ValueError:
            raise BudgetError(
                f"budget {spec!r} is neither a number of FLOPs per sample nor 'model:NAME[@WIDTH]'"
            ) from None
    if not (math.isfinite(value) and value > 0):
        raise BudgetError(f"budget {spec!r}: FLOPs per sample must be a positive finite number")
    return BudgetSpec(flops=value)


def model_flops(
    model_name: str,
    inputs: ModelInputs,
    width: float,
    batch: Batch,
    model_config: dict[str, Any] | None = None,
    routing: DomainRouting | None = None,
) -> float:
    """FLOPs per sample of a freshly built model (fixed init seed, so self-routing models count stably).

    ``routing`` places the miner (held inside the model, or routing from outside and counted beside it);
    without it the model is counted with no miner.
    """
    routing = routing or DomainRouting.for_source("none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = routing.build(inputs, width=width, model_name=model_name, model_overrides=model_config)
    return routing.flops(model, batch)


def resolve_budget(spec: str | float | BudgetSpec, inputs: ModelInputs, batch: Batch) -> float:
    """FLOPs per sample that ``spec`` stands for on these inputs and this batch."""
    parsed = parse_budget(spec)
    if parsed.model is None:
        return float(parsed.flops)  # type: ignore[arg-type]
    if parsed.model not in model_names():
        raise BudgetError(f"budget {spec!r}: unknown model {parsed.model!r}; registered: {model_names()}")
    return model_flops(parsed.model, inputs, parsed.width, batch)


def fit_width(
    model_name: str,
    inputs: ModelInputs,
    budget_flops: float,
    batch: Batch,
    model_config: dict[str, Any] | None = None,
    routing: DomainRouting | None = None,
    tol: float = 0.03,
) -> WidthFit:
    """The width at which ``model_name`` costs ``budget_flops`` per sample (within ``tol``, relative).

    Raises:
        BudgetError: naming the model and its min/max reachable FLOPs when the budget is out of reach.
    """
    cache: dict[float, float] = {}

    def flops(width: float) -> float:
        if width not in cache:
            cache[width] = model_flops(model_name, inputs, width, batch, model_config, routing)
        return cache[width]

    def rel(width: float) -> float:
        return abs(flops(width) - budget_flops) / budget_flops

    def out_of_reach(why: str) -> BudgetError:
        return BudgetError(
            f"model {model_name!r} cannot be fitted to {budget_flops:,.0f} FLOPs/sample within ±{tol:.0%}: "
            f"{why}; reachable FLOPs/sample span {flops(MIN_WIDTH):,.0f} (width {MIN_WIDTH:g}) to "
            f"{flops(MAX_WIDTH):,.0f} (width {MAX_WIDTH:g})"
        )

    # bracket: lo costs at most the budget, hi at least
    lo = hi = 1.0
    if flops(1.0) < budget_flops:
        while flops(hi) < budget_flops:
            lo, hi = hi, hi * 2
            if hi > MAX_WIDTH:
                raise out_of_reach("the budget is above the largest width")
    else:
        while flops(lo) > budget_flops:
            lo, hi = lo / 2, lo
            if lo < MIN_WIDTH:
                if rel(hi) <= tol:
                    return WidthFit(hi, flops(hi), rel(hi))
                raise out_of_reach("the budget is below the smallest width")
    # bisection on the staircase; stop early once a width is well inside the tolerance
    for _ in range(40):
        if rel(lo) <= tol / 3 or rel(hi) <= tol / 3 or hi - lo <= 1e-6 * hi:
            break
        mid = (lo + hi) / 2
        if flops(mid) <= budget_flops:
            lo = mid
        else:
            hi = mid
    # local search: the best width is one of the two steps either side of the budget
    best = min((lo, hi), key=lambda w: (rel(w), w))
    if rel(best) > tol:
        raise out_of_reach(
            f"the closest widths give {flops(lo):,.0f} (width {lo:.4g}) and {flops(hi):,.0f} (width {hi:.4g})"
        )
    log.info(
        "fitted %s to %.0f FLOPs/sample: width %.4g → %.0f (%+.2f%%), %d evaluations",
        model_name,
        budget_flops,
        best,
        flops(best),
        100 * (flops(best) - budget_flops) / budget_flops,
        len(cache),
    )
    return WidthFit(width=best, flops=flops(best), rel_error=rel(best))


def budget_for_data(
    prepared: PreparedData, spec: str | float | BudgetSpec, miner: Any | None = None
) -> float:
    """FLOPs per sample that ``spec`` stands for on ``prepared``: a ``model:NAME`` budget is counted on the
    first validation rows, routed by the first of ``none``/``handcrafted``/``mined`` that NAME accepts."""
    parsed = parse_budget(spec)
    if parsed.model is None:
        return float(parsed.flops)  # type: ignore[arg-type]
    if parsed.model not in model_names():
        raise BudgetError(f"budget {spec!r}: unknown model {parsed.model!r}; registered: {model_names()}")
    accepted = model_class(parsed.model).domain_sources
    source = next(s for s in ("none", "handcrafted", "mined") if s in accepted)
    routed = DomainRouting.for_model(parsed.model, source, miner=miner).route(prepared)
    return resolve_budget(parsed, routed.inputs, count_batch(routed.data.valid))


__all__ = [
    "FLOP_BUDGET_DEFAULT",
    "BudgetError",
    "BudgetSpec",
    "WidthFit",
    "budget_for_data",
    "fit_width",
    "model_flops",
    "parse_budget",
    "resolve_budget",
]
