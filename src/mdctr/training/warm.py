"""Warm start: initialise a model from an older trained one (the champion, or a local bundle) on newer data.

What carries over, and how (docs/pipeline.md, "Warm start"):

* vocabularies are merged (:meth:`mdctr.data.encode.FeatureSpec.extended_with`): every id the older model knew
  keeps its index and its embedding row; ids new in this training window are appended and get fresh rows
  (N(0, 1e-4), as in a cold start); ids that left are kept;
* the dense scalers are the older model's (kept, not refitted): its first layers were trained on inputs scaled
  that way, so refitting would shift every dense input under the carried weights;
* every other tensor (towers, BatchNorm statistics, the VQ-VAE codebook of ``adaptive2``/``mined-joint``) is
  copied as is; an external miner is warm-started separately (``fit_miner(init=…)``, the mine step).

What cannot be carried — another model or domain source, another model config, embedding dim, number of routing
domains or dense features, or another width (tensor shapes) — is refused with :class:`WarmStartError` naming the
difference, or, with ``fallback="cold"``, logged and trained from scratch.

This module knows no MLflow and no bundle format (both sit above training); the step and the CLI load the
source (:func:`mdctr.steps.train_model.load_warm_source`) and hand a :class:`WarmSource` in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from mdctr.data.encode import FeatureSpec
from mdctr.data.prepare import PreparedData, extend_prepared
from mdctr.domains.miner import carry_state
from mdctr.models.base import ModelInputs
from mdctr.schema import SchemaError

log = logging.getLogger(__name__)

#: what happens when a warm start cannot be carried: refuse (the default) or train from scratch
WARM_FALLBACKS = ("error", "cold")


class WarmStartError(ValueError):
    """A warm start that cannot be carried; one line naming the source and what differs."""


@dataclass(frozen=True)
class WarmSource:
    """An older trained model to start from.

    Attributes:
        label: what to call it in messages and logs (``mdctr-ml-1m v3 (champion)``, a bundle path).
        model_name, domain_source, model_config, width, inputs: how it was built (the bundle's ``bundle.json``).
        spec: the feature spec it was trained with (vocabularies whose indices its embedding rows follow).
        state: its state dict (CPU tensors).
        miner: its external domain miner (``mined`` routed from outside), else None.
    """

    label: str
    model_name: str
    domain_source: str
    model_config: dict[str, Any]
    width: float
    inputs: ModelInputs
    spec: FeatureSpec
    state: dict[str, torch.Tensor]
    miner: Any | None = None

    @classmethod
    def from_predictor(cls, predictor: Any, label: str) -> WarmSource:
        """From a loaded :class:`mdctr.serving.bundle.Predictor` (its model, bundle info, spec and miner)."""
        info = predictor.info
        return cls(
            label=label,
            model_name=info.model_name,
            domain_source=info.domain_source,
            model_config=dict(info.model_config),
            width=float(info.width),
            inputs=info.inputs,
            spec=predictor.spec,
            state={k: v.detach().cpu().clone() for k, v in predictor.model.state_dict().items()},
            miner=predictor.miner,
        )


def config_mismatch(
    source: WarmSource, model_name: str, domain_source: str, model_config: dict[str, Any] | None
) -> str | None:
    """What differs between ``source`` and the model about to be trained, before any data is routed; None
    when model, domain source and config overrides all match."""
    found = []
    if source.model_name != model_name:
        found.append(f"model {source.model_name!r} there, {model_name!r} here")
    if source.domain_source != domain_source:
        found.append(f"domain source {source.domain_source!r} there, {domain_source!r} here")
    if dict(source.model_config) != dict(model_config or {}):
        found.append(f"model config {source.model_config} there, {dict(model_config or {})} here")
    return "; ".join(found) or None


def inputs_mismatch(source: WarmSource, inputs: ModelInputs) -> str | None:
    """What differs in the model inputs (the vocabulary sizes may grow; nothing else may change), or None."""
    old = source.inputs
    found = [
        f"{what} {a} there, {b} here"
        for what, a, b in (
            ("embedding dim", old.embed_dim, inputs.embed_dim),
            ("routing domains", old.num_domains, inputs.num_domains),
            ("dense features", old.num_dense, inputs.num_dense),
            ("sparse features", len(old.vocab_sizes), len(inputs.vocab_sizes)),
        )
        if a != b
    ]
    return "; ".join(found) or None


def extend_data(source: WarmSource, prepared: PreparedData) -> tuple[PreparedData, str | None]:
    """``prepared`` re-encoded onto ``source``'s vocabularies and scalers, or (``prepared``, why not)."""
    try:
        return extend_prepared(prepared, source.spec), None
    except SchemaError as e:
        return prepared, str(e)


def carry_weights(model: torch.nn.Module, source: WarmSource) -> str | None:
    """Load ``source``'s weights into ``model`` (built on the extended vocabularies); None on success, else
    why not (``model`` is then left as it was)."""
    try:
        fresh = carry_state(model, source.state, source.inputs.vocab_sizes)
    except (ValueError, RuntimeError) as e:
        return str(e)
    log.info(
        "warm-started from %s: every tensor carried; new embedding rows %s",
        source.label,
        fresh or "none",
    )
    return None


def refuse_or_fall_back(source: WarmSource, why: str, fallback: str) -> None:
    """Raise :class:`WarmStartError` (``fallback="error"``), or log that training starts cold (``"cold"``)."""
    if fallback not in WARM_FALLBACKS:
        raise WarmStartError(f"warm-start fallback {fallback!r} is unknown; expected one of {WARM_FALLBACKS}")
    if fallback == "error":
        raise WarmStartError(
            f"cannot warm-start from {source.label}: {why} (pass --warm-start-fallback cold to train from "
            "scratch instead)"
        )
    log.warning("cannot warm-start from %s: %s; training from scratch (fallback cold)", source.label, why)
