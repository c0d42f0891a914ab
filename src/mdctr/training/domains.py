"""Which routing domain a model sees: the dataset's hand-crafted id, a mined code, or one domain for all.

The routing domain lives in ``TensorData.domain``; this module is the one place that fills it. The
hand-crafted id stays in ``TensorData.handcrafted`` whatever the source, so per-domain metrics never change
meaning.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import torch

from mdctr.data.prepare import PreparedData
from mdctr.evaluation.budget import mines_own_domains
from mdctr.models.base import DOMAIN_SOURCES, model_class

log = logging.getLogger(__name__)

DomainSource = Literal["handcrafted", "mined", "none"]


class DomainSourceError(ValueError):
    """A model was asked to route by a domain source it does not accept, or the source lacks its input."""


def check_domain_source(model_name: str, source: str) -> None:
    """Raise :class:`DomainSourceError` unless ``model_name`` accepts ``source``."""
    if source not in DOMAIN_SOURCES:
        raise DomainSourceError(f"unknown domain source {source!r}; expected one of {list(DOMAIN_SOURCES)}")
    accepted = tuple(model_class(model_name).domain_sources)
    if source not in accepted:
        raise DomainSourceError(
            f"model {model_name!r} does not accept domain source {source!r}; it accepts {list(accepted)}"
        )


def apply_domain_source(
    prepared: PreparedData,
    source: str,
    miner: Any | None = None,
    *,
    model_name: str | None = None,
) -> tuple[PreparedData, int]:
    """Route every split by ``source``; returns the routed data and the number of routing domains.

    Args:
        prepared: encoded splits (``domain`` may hold anything; it is replaced).
        source: ``"handcrafted"`` (the dataset's id), ``"mined"`` (``miner.assign`` codes) or ``"none"``
            (zeros: a single domain).
        miner: a fitted :class:`~mdctr.domains.miner.DomainMiner`; required for ``mined`` unless the model
            mines its own domains.
        model_name: when given, the model must accept ``source`` (a clear error otherwise).
    """
    if model_name is not None:
        check_domain_source(model_name, source)
    elif source not in DOMAIN_SOURCES:
        raise DomainSourceError(f"unknown domain source {source!r}; expected one of {list(DOMAIN_SOURCES)}")

    if source == "handcrafted":
        num = prepared.spec.schema.num_domains
        routed = {k: prepared.split(k).with_domain(prepared.split(k).handcrafted) for k in _SPLITS}
    elif source == "mined" and miner is not None:
        num = int(miner.num_codes)
        routed = {k: prepared.split(k).with_domain(miner.assign(prepared.split(k))) for k in _SPLITS}
        sizes = torch.bincount(routed["train"].domain, minlength=num).tolist()
        log.info("routing by %d mined domains; train rows per domain %s", num, sizes)
    elif source == "mined" and model_name is not None and mines_own_domains(model_name):
        # the model's own VQ-VAE picks the domain inside forward; the routing column is unused
        num = 1
        routed = {k: _zeros(prepared, k) for k in _SPLITS}
    elif source == "mined":
        raise DomainSourceError(
            "domain source 'mined' needs a fitted miner (mdctr.domains.fit_miner)"
            + (f" for model {model_name!r}" if model_name else "")
        )
    else:  # none
        num = 1
        routed = {k: _zeros(prepared, k) for k in _SPLITS}
    return dataclasses.replace(prepared, **routed), num


_SPLITS = ("train", "valid", "test")


def _zeros(prepared: PreparedData, split: str) -> Any:
    data = prepared.split(split)
    return data.with_domain(torch.zeros(len(data), dtype=torch.int64))
