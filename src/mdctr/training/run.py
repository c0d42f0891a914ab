"""Train one model on prepared data with one domain source: the function the CLI and the pipeline call."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mdctr.data.encode import FeatureSpec
from mdctr.data.prepare import PreparedData
from mdctr.data.stream import ParquetStream
from mdctr.io import json_safe
from mdctr.models.base import CTRModel, ModelInputs
from mdctr.routing import ControlState, DomainRouting, Routed, count_batch, fit_width, resolve_budget
from mdctr.routing.budget import model_flops
from mdctr.training.calibration import Calibration, bce_of_logits, fit_calibration
from mdctr.training.config import TrainConfig
from mdctr.training.metrics import binary_metrics, evaluate_predictions
from mdctr.training.trainer import EpochCallback, FitResult, fit, predict_logits
from mdctr.training.warm import (
    WarmSource,
    carry_weights,
    config_mismatch,
    extend_data,
    inputs_mismatch,
    refuse_or_fall_back,
)

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
        routing: how the model was routed (serving keeps ``routing.serving_miner(model)`` beside it).
        control: the fitted control source (``random``/``binned``) that serving must apply, else None.
        extra: budget details (``budget``, ``budget_flops``, ``budget_rel_error``) when fitted to one.
        calibration: the per-domain temperature scaling fitted on validation (``config.calibrate``), else None;
            ``metrics`` and ``predictions`` are then the calibrated model's.
        base_rate: the base-rate predictor (the train positive rate for every row) on the same test rows:
            ``{"positive_rate", "logloss"}``; a model whose test logloss is above it is worse than a constant.
        valid_logloss: validation logloss of the returned model (calibrated when ``calibration`` is set).
        spec: the feature spec the model's inputs follow: the prepared data's, or with a warm start the
            source's extended onto it (save this one in the bundle).
        warm_started: the warm start's source label, or ``""`` for a cold start.
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
    routing: DomainRouting | None = None
    control: ControlState | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    base_rate: dict[str, float] = field(default_factory=dict)
    valid_logloss: float = float("nan")
    spec: FeatureSpec | None = None
    warm_started: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (NaN → None): what ``mdctr train --json`` prints."""
        return json_safe(
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
                "valid_logloss": self.valid_logloss,
                "early_stop_metric": self.fit.early_stop_metric,
                "base_rate_logloss": self.base_rate.get("logloss"),
                "calibration": self.calibration.to_dict() if self.calibration is not None else None,
                "warm_started": self.warm_started,
                "history": self.fit.history,
                **self.extra,
            }
        )


@dataclass(frozen=True)
class ModelSetup:
    """A routed, width-fitted, built (and maybe warm-started) model with the data it trains on."""

    prepared: PreparedData
    routing: DomainRouting
    routed: Routed
    width: float
    extra: dict[str, Any]
    model: CTRModel
    batch: Any  # Batch: the FLOP-counting sample


def _setup(
    prepared: PreparedData,
    model_name: str,
    domain_source: str,
    *,
    width: float,
    model_config: dict[str, Any] | None,
    miner: torch.nn.Module | None,
    budget: str | float | None,
    seed: int,
    warm: WarmSource | None,
) -> ModelSetup:
    """Route, fit the width (a warm start keeps its source's width when that meets the budget), build."""
    routing = DomainRouting.for_model(model_name, domain_source, miner=miner, model_overrides=model_config)
    routed = routing.route(prepared)
    inputs = routed.inputs
    batch = count_batch(routed.data.valid)
    extra: dict[str, Any] = {}
    if warm is not None:
        width = warm.width  # the source's tensor shapes; other widths cannot be carried
    if budget is not None:
        budget_flops = resolve_budget(budget, inputs, batch)
        extra = {"budget": str(budget), "budget_flops": budget_flops}
        rel = None
        if warm is not None:
            flops = model_flops(model_name, inputs, width, batch, model_config, routing)
            rel = abs(flops - budget_flops) / budget_flops
        if rel is None or rel > _BUDGET_TOL:  # cold, or the source's width misses this budget: fit
            fitted = fit_width(model_name, inputs, budget_flops, batch, model_config, routing)
            width, rel = fitted.width, fitted.rel_error
        extra["budget_rel_error"] = rel
    torch.manual_seed(seed)
    model = routing.build(inputs, width=width)
    return ModelSetup(prepared, routing, routed, width, extra, model, batch)


def start_model(
    prepared: PreparedData,
    model_name: str,
    domain_source: str,
    *,
    warm: WarmSource | None,
    warm_fallback: str,
    **options: Any,
) -> tuple[ModelSetup, str]:
    """:func:`_setup`, warm-started from ``warm`` when everything carries; returns it and the source's label
    (``""``: cold, either asked for or the fallback).

    The data is re-encoded onto the source's vocabularies whenever the two specs are compatible, even when the
    weights then cannot be carried (a cold fallback): a miner warm-started by the mine step was fitted on that
    encoding, and every run of one warm-started pipeline must encode rows alike.
    """
    if warm is None:
        return _setup(prepared, model_name, domain_source, warm=None, **options), ""
    data, why = extend_data(warm, prepared)
    why = why or config_mismatch(warm, model_name, domain_source, options.get("model_config"))
    if why is None:
        setup = _setup(data, model_name, domain_source, warm=warm, **options)
        why = inputs_mismatch(warm, setup.routed.inputs) or carry_weights(setup.model, warm)
        if why is None:
            return setup, warm.label
    refuse_or_fall_back(warm, why, warm_fallback)
    return _setup(data, model_name, domain_source, warm=None, **options), ""


#: relative FLOP error within which a warm start keeps its source's width (budget fitting's own tolerance)
_BUDGET_TOL = 0.03


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
    train_stream: ParquetStream | None = None,
    warm: WarmSource | None = None,
    warm_fallback: str = "error",
) -> TrainedModel:
    """Route by ``domain_source``, build, train, and evaluate one model on the test split.

    Args:
        prepared: encoded splits.
        model_name: a registered model.
        domain_source: ``handcrafted``, ``mined`` or ``none`` (must be one the model accepts).
        width: width multiplier (ignored when ``budget`` is given).
        model_config: overrides of the model's config (strict).
        miner: fitted domain miner for ``mined``; :class:`~mdctr.routing.DomainRouting` decides where it sits
            (routing from outside, held inside the model, or not needed by a model with its own VQ-VAE).
        config: trainer settings; ``config.seed`` also seeds model initialisation.
        budget: fit the width to this FLOP budget (see :func:`mdctr.routing.budget.parse_budget`).
        on_epoch: passed to :func:`fit`.
        train_stream: train from this stream (routed by its ``domain_fn``) instead of ``prepared.train``, which
            then only serves as a sample for budget fitting.
        warm: start from this older model (:mod:`mdctr.training.warm`): the data is re-encoded onto its
            vocabularies, its width is kept and its weights carried; ``warm_fallback`` (``error``/``cold``)
            says what happens when they cannot be.
    """
    setup, warm_label = start_model(
        prepared,
        model_name,
        domain_source,
        warm=warm,
        warm_fallback=warm_fallback,
        width=width,
        model_config=model_config,
        miner=miner,
        budget=budget,
        seed=config.seed,
    )
    routed, model = setup.routed, setup.model
    log.info(
        "training %s (source %s, width %.4g, %d routing domains, %d dense params, %s) on %d rows",
        model_name,
        domain_source,
        setup.width,
        routed.num_domains,
        model.dense_parameters(),
        f"warm from {warm_label}" if warm_label else "cold",
        len(routed.data.train),
    )
    train = train_stream if train_stream is not None else routed.data.train
    result = fit(model, train, routed.data.valid, config, on_epoch=on_epoch)
    return _measure(setup, model_name, domain_source, result, config, warm_label)


def _measure(
    setup: ModelSetup,
    model_name: str,
    domain_source: str,
    result: FitResult,
    config: TrainConfig,
    warm_label: str,
) -> TrainedModel:
    """The trained model of ``setup`` scored on the test split (calibrated first when the config says so)."""
    model, routed, prepared = setup.model, setup.routed, setup.prepared
    probs, labels, metrics, calibration, valid_logloss = _evaluate(model, routed.data, prepared.spec, config)
    flops = setup.routing.flops(model, setup.batch)
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
        width=setup.width,
        inputs=routed.inputs,
        fit=result,
        metrics=metrics,
        predictions=probs,
        labels=labels,
        flops=flops,
        dense_params=model.dense_parameters(),
        routing=setup.routing,
        control=routed.control,
        seed=config.seed,
        extra=setup.extra,
        calibration=calibration,
        base_rate=base_rate_metrics(prepared.train.label.numpy(), labels),
        valid_logloss=valid_logloss,
        spec=prepared.spec,
        warm_started=warm_label,
    )


def _evaluate(
    model: CTRModel, data: Any, spec: FeatureSpec, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Calibration | None, float]:
    """Test probabilities [N] and labels [N], test metrics, the calibration (``config.calibrate``) and the
    validation logloss of the returned (maybe calibrated) model."""
    domain_names = spec.schema.domain_names
    valid_labels = data.valid.label.numpy().astype(np.float64)
    valid_logits = predict_logits(model, data.valid, config.eval_batch_size)
    test_logits = predict_logits(model, data.test, config.eval_batch_size)
    calibration = None
    if config.calibrate == "temperature":
        calibration = fit_calibration(
            valid_labels, valid_logits, data.valid.handcrafted.numpy(), domain_names
        )
        valid_logits = calibration.apply_logits(valid_logits, data.valid.handcrafted.numpy())
        test_logits = calibration.apply_logits(test_logits, data.test.handcrafted.numpy())
    probs = 0.5 * (1.0 + np.tanh(0.5 * test_logits))  # the sigmoid in float64, no overflow
    labels = data.test.label.numpy().astype(np.float64)
    metrics = evaluate_predictions(labels, probs, data.test.handcrafted, domain_names)
    return probs, labels, metrics, calibration, bce_of_logits(valid_labels, valid_logits)


def base_rate_metrics(train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, float]:
    """The base-rate predictor: the train positive rate as every test row's probability.

    Args:
        train_labels: [N_train] 0/1 (a sample of them when training streams).
        test_labels: [N_test] 0/1.

    Returns:
        ``{"positive_rate": train rate, "logloss": its test logloss}``: the logloss any useful model must beat.
    """
    rate = float(np.mean(np.asarray(train_labels, dtype=np.float64))) if len(train_labels) else 0.5
    y = np.asarray(test_labels, dtype=np.float64)
    return {"positive_rate": rate, "logloss": float(binary_metrics(y, np.full(y.shape, rate))["logloss"])}
