"""Step: the training entries of a run: every (model, domain source, seed) the model registry allows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The domain sources a pipeline run trains unless told otherwise: the production candidates. The controls
#: (``random``, ``binned``; :data:`mdctr.routing.CONTROL_SOURCES`) are scientific baselines that a claim about
#: mined domains must beat (``mdctr benchmark`` and ``benchmarks/grid.py`` keep them), not models to serve;
#: ``none`` on a multi-domain model is a single-domain model, which the ``dnn`` baseline (always planned)
#: already is at the same FLOPs. With the 16 registered models this is 29 entries per seed (68 with all five).
DEFAULT_DOMAIN_SOURCES: tuple[str, ...] = ("handcrafted", "mined")


@dataclass(frozen=True)
class PlanConfig:
    """Attributes: requested ``models``, ``domain_sources`` and ``seeds`` (their cross product is filtered)."""

    models: Sequence[str]
    domain_sources: Sequence[str]
    seeds: Sequence[int] = (0,)


@dataclass(frozen=True)
class PlanOutput:
    """Attributes: ``entries`` (dicts with ``model``, ``domain_source``, ``seed``) and ``skipped`` pairs."""

    entries: tuple[dict[str, object], ...]
    skipped: tuple[tuple[str, str], ...]


def skip_reason(model: str) -> str:
    """Why a requested source is not planned for ``model``: the sources it accepts."""
    from mdctr.models.base import model_class

    return f"accepts only {list(model_class(model).domain_sources)}"


def plan_pairs_or_fail(
    models: Sequence[str], domain_sources: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (model, domain source) pairs to train and the requested ones a model does not accept
    (:func:`mdctr.models.base.plan_pairs`), each skipped pair logged with why; the pipeline's plan and the
    benchmark grid (:mod:`mdctr.steps.grid`) both plan with it.

    Raises ``KeyError`` for an unknown model, ``ValueError`` for an unknown source or an empty plan.
    """
    from mdctr.models.base import plan_pairs

    pairs, skipped = plan_pairs(models, domain_sources)
    for model, source in skipped:
        log.info("not training %s with domain source %s: %s", model, source, skip_reason(model))
    if not pairs:
        raise ValueError(
            f"no (model, domain source) pair to train: models {list(models)} accept none of {list(domain_sources)}"
        )
    return pairs, skipped


def plan_runs(*, config: PlanConfig) -> PlanOutput:
    """Every planned (model, domain source) pair (:func:`plan_pairs_or_fail`) × seeds.

    Raises ``KeyError`` for an unknown model, ``ValueError`` for an unknown source or an empty plan.
    """
    if not config.seeds:
        raise ValueError("no seeds given")
    pairs, skipped = plan_pairs_or_fail(config.models, config.domain_sources)
    entries = [
        {"model": model, "domain_source": source, "seed": int(s)}
        for model, source in pairs
        for s in config.seeds
    ]
    log.info("planned %d training entries (skipped %d unsupported pairs)", len(entries), len(skipped))
    return PlanOutput(entries=tuple(entries), skipped=tuple(skipped))
