"""Train one model on prepared data with one domain source: the function the CLI and the pipeline call."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mdctr.data.prepare import PreparedData
from mdctr.evaluation.budget import build_with_miner, fit_width, mines_own_domains, resolve_budget
from mdctr.evaluation.flops import count_batch, dense_parameters, flops_per_sample
from mdctr.models.base import CTRModel, ModelInputs
from mdctr.training.config import TrainConfig
from mdctr.training.domains import apply_domain_source
from mdctr.training.metrics import evaluate_predictions
from mdctr.training.trainer import EpochCallback, FitResult, fit, predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and everything measured about it.

    Attributes:
        model: the trained model holding its best validation weights (on the training device).
        model_name, domain_source, width: what was trained.
        inputs: the :class:`ModelInputs` it was built with (``num_domains`` = routing domains).
        fit: the trainer's :class:`FitResult`.
        metrics: test metrics from :func:`evaluate_predictions` (overall + per hand-crafted domain).
        predictions: [N_test] float64 test click probabilities.
        labels: [N_test] float64 test labels.
        flops: forward FLOPs per sample (eval, routed, miner included for an external miner).
        dense_params: parameters outside the embedding table.
        seed: the training seed.
    """

    model: CTRModel
    model_name: str
    domain_source: str
    width: float
    inputs: ModelInputs
    fit: FitResult
    metrics: dict[str, Any]
    predictions: np.ndarray
    labels: np.ndarray
    flops: float
    dense_params: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (NaN → None): what ``mdctr train --json`` prints."""
        return _json_safe(
            {
                "model": self.model_name,
                "domain_source": self.domain_source,
                "seed": self.seed,
                "width": self.width,
                "num_routing_domains": self.inputs.num_domains,
                "test_auc": self.metrics["auc"],
                "test_logloss": self.metrics["logloss"],
                "domain_auc": {k: v["auc"] for k, v in self.metrics["domains"].items()},
                "domain_logloss": {k: v["logloss"] for k, v in self.metrics["domains"].items()},
                "flops_per_sample": self.flops,
                "dense_params": self.dense_params,
                "train_samples_per_s": self.fit.train_samples_per_s,
                "wall_s": self.fit.wall_s,
                "best_epoch": self.fit.best_epoch,
                "best_valid_auc": self.fit.best_valid_auc,
                "history": self.fit.history,
                **self.extra,
            }
        )


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def model_inputs(prepared: PreparedData, num_domains: int, embed_dim: int = 16) -> ModelInputs:
    """:class:`ModelInputs` of prepared data with ``num_domains`` routing domains."""
    spec = prepared.spec
    return ModelInputs(tuple(spec.vocab_sizes), spec.num_dense, num_domains, embed_dim)


def train_model(
    prepared: PreparedData,
    model_name: str,
    domain_source: str,
    *,
    width: float = 1.0,
    model_config: dict[str, Any] | None = None,
    miner: torch.nn.Module | None = None,
    config: TrainConfig,
    budget: str | float | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainedModel:
    """Route by ``domain_source``, build, train, and evaluate one model on the test split.

    Args:
        prepared: encoded splits.
        model_name: a registered model.
        domain_source: ``handcrafted``, ``mined`` or ``none`` (must be one the model accepts).
        width: width multiplier (ignored when ``budget`` is given).
        model_config: overrides of the model's config (strict).
        miner: fitted domain miner for ``mined``: routes from outside the model, or is attached to a model
            built with ``miner="pretrained"``; a self-mining model (``adaptive2`` joint) needs none.
        config: trainer settings; ``config.seed`` also seeds model initialisation.
        budget: fit the width to this FLOP budget (see :func:`mdctr.evaluation.budget.parse_budget`).
        on_epoch: passed to :func:`fit`.
    """
    miner = miner if domain_source == "mined" else None
    router = None if mines_own_domains(model_name) else miner  # routes from outside the model
    routed, num_domains = apply_domain_source(prepared, domain_source, router, model_name=model_name)
    inputs = model_inputs(prepared, num_domains)
    batch = count_batch(routed.valid)
    extra: dict[str, Any] = {}
    if budget is not None:
        budget_flops = resolve_budget(budget, inputs, batch)
        fitted = fit_width(model_name, inputs, budget_flops, batch, model_config, miner)
        width = fitted.width
        extra = {"budget": str(budget), "budget_flops": budget_flops, "budget_rel_error": fitted.rel_error}

    torch.manual_seed(config.seed)
    model, external_miner = build_with_miner(
        model_name, inputs, width=width, model_config=model_config, miner=miner
    )
    log.info(
        "training %s (source %s, width %.4g, %d routing domains, %d dense params) on %d rows",
        model_name,
        domain_source,
        width,
        num_domains,
        dense_parameters(model),
        len(routed.train),
    )
    result = fit(model, routed.train, routed.valid, config, on_epoch=on_epoch)
    probs = predict(model, routed.test, config.eval_batch_size)
    labels = routed.test.label.numpy().astype(np.float64)
    metrics = evaluate_predictions(labels, probs, routed.test.handcrafted, prepared.spec.schema.domain_names)
    flops = flops_per_sample(model, batch, miner=external_miner)
    log.info(
        "%s/%s: test auc %.5f logloss %.5f, %.0f FLOPs/sample",
        model_name,
        domain_source,
        metrics["auc"],
        metrics["logloss"],
        flops,
    )
    return TrainedModel(
        model=model,
        model_name=model_name,
        domain_source=domain_source,
        width=width,
        inputs=inputs,
        fit=result,
        metrics=metrics,
        predictions=probs,
        labels=labels,
        flops=flops,
        dense_params=dense_parameters(model),
        seed=config.seed,
        extra=extra,
    )
