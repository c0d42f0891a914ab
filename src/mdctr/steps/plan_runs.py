"""Step: the training entries of a run: every (model, domain source, seed) the model registry allows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


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


def plan_runs(*, config: PlanConfig) -> PlanOutput:
    """Every planned (model, domain source) pair (:func:`mdctr.models.base.plan_pairs`) × seeds.

    Raises ``KeyError`` for an unknown model, ``ValueError`` for an unknown source or an empty plan.
    """
    from mdctr.models.base import plan_pairs

    if not config.seeds:
        raise ValueError("no seeds given")
    pairs, skipped = plan_pairs(config.models, config.domain_sources)
    entries = [
        {"model": model, "domain_source": source, "seed": int(s)}
        for model, source in pairs
        for s in config.seeds
    ]
    if not entries:
        raise ValueError(
            f"no (model, domain source) pair to train: models {list(config.models)} accept none of "
            f"{list(config.domain_sources)}"
        )
    log.info("planned %d training entries (skipped %d unsupported pairs)", len(entries), len(skipped))
    return PlanOutput(entries=tuple(entries), skipped=tuple(skipped))
