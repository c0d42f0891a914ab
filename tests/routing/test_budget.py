from __future__ import annotations

from typing import Any

import pytest

from mdctr.models import ModelInputs, model_class, model_names
from mdctr.routing.budget import (
    BudgetError,
    BudgetSpec,
    fit_width,
    model_flops,
    parse_budget,
    resolve_budget,
)

INPUTS = ModelInputs(vocab_sizes=(13, 9, 7, 5), num_dense=2, num_domains=3, embed_dim=8)


def test_parse_budget() -> None:
    assert parse_budget("model:dnn") == BudgetSpec(model="dnn")
    assert parse_budget("model:dnn@2.5") == BudgetSpec(model="dnn", width=2.5)
    assert parse_budget("1.5e5") == BudgetSpec(flops=150000.0)
    assert parse_budget(1000) == BudgetSpec(flops=1000.0)
    for bad in ("dnn", "-3", "model:", "model:dnn@0"):
        with pytest.raises(BudgetError):
            parse_budget(bad)


def test_resolve_model_budget_is_that_models_flops(random_batch: Any) -> None:
    batch = random_batch(INPUTS, 256)
    assert resolve_budget("model:dnn", INPUTS, batch) == model_flops("dnn", INPUTS, 1.0, batch)
    assert resolve_budget("12345", INPUTS, batch) == 12345.0
    with pytest.raises(BudgetError, match="unknown model"):
        resolve_budget("model:nope", INPUTS, batch)


@pytest.mark.parametrize("name", model_names())
def test_fitted_width_is_within_three_percent(name: str, random_batch: Any) -> None:
    """Every registered model reaches the dnn budget (its default FLOPs, and 1.7× that) within ±3%."""
    sources = model_class(name).domain_sources
    inputs = INPUTS if "handcrafted" in sources else ModelInputs(INPUTS.vocab_sizes, 2, 1, 8)
    batch = random_batch(inputs, 256)
    for factor in (1.0, 1.7):
        budget = factor * model_flops("dnn", inputs, 1.0, batch)
        fit = fit_width(name, inputs, budget, batch)
        assert fit.rel_error <= 0.03
        assert fit.flops == pytest.approx(model_flops(name, inputs, fit.width, batch))
        assert abs(fit.flops - budget) / budget == pytest.approx(fit.rel_error)


def test_unreachable_budget_names_model_and_range(random_batch: Any) -> None:
    batch = random_batch(INPUTS, 256)
    with pytest.raises(BudgetError, match=r"model 'dnn'.*reachable FLOPs/sample span"):
        fit_width("dnn", INPUTS, 5.0, batch)
    with pytest.raises(BudgetError, match=r"above the largest width"):
        fit_width("dnn", INPUTS, 1e13, batch)


def test_adaptive2_star_backbone_fits_the_budget(random_batch: Any) -> None:
    inputs = ModelInputs(INPUTS.vocab_sizes, 2, 1, 8)
    batch = random_batch(inputs, 256)
    budget = model_flops("dnn", inputs, 1.0, batch)
    config = {"backbone": "star"}
    fit = fit_width("adaptive2", inputs, budget, batch, model_config=config)
    assert fit.rel_error <= 0.03
    assert fit.flops == pytest.approx(model_flops("adaptive2", inputs, fit.width, batch, config))
