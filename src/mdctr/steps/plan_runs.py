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
    """Cross product of models × domain sources × seeds, keeping the sources each model accepts
    (``CTRModel.domain_sources``). A model with a single source (``dnn``: ``none``; ``adaptive2``:
    ``mined``) always runs with it, so the requested sources choose how the multi-domain models route
    without dropping the single-domain baseline.

    Raises ``KeyError`` for an unknown model, ``ValueError`` for an unknown source or an empty plan.
    """
    from mdctr.models import DOMAIN_SOURCES, model_class

    unknown = sorted(set(config.domain_sources) - set(DOMAIN_SOURCES))
    if unknown:
        raise ValueError(f"unknown domain source(s) {unknown}; expected some of {list(DOMAIN_SOURCES)}")
    if not config.seeds:
        raise ValueError("no seeds given")
    entries: list[dict[str, object]] = []
    skipped: list[tuple[str, str]] = []
    for model in dict.fromkeys(config.models):  # de-duplicate, keep order
        accepted = model_class(model).domain_sources
        skipped += [(model, s) for s in dict.fromkeys(config.domain_sources) if s not in accepted]
        requested = accepted if len(accepted) == 1 else config.domain_sources
        for source in dict.fromkeys(requested):
            if source not in accepted:
                continue
            entries += [{"model": model, "domain_source": source, "seed": int(s)} for s in config.seeds]
    if not entries:
        raise ValueError(
            f"no (model, domain source) pair to train: models {list(config.models)} accept none of "
            f"{list(config.domain_sources)}"
        )
    log.info("planned %d training entries (skipped %d unsupported pairs)", len(entries), len(skipped))
    return PlanOutput(entries=tuple(entries), skipped=tuple(skipped))
