from __future__ import annotations

import pytest
import torch

from mdctr.data.tensors import Batch
from mdctr.evaluation.budget import (
    BudgetError,
    BudgetSpec,
    fit_width,
    model_flops,
    parse_budget,
    resolve_budget,
)
from mdctr.models import ModelInputs, model_class, model_names

INPUTS = ModelInputs(vocab_sizes=(13, 9, 7, 5), num_dense=2, num_domains=3, embed_dim=8)


def _batch(inputs: ModelInputs, rows: int = 256) -> Batch:
    g = torch.Generator().manual_seed(0)
    sparse = torch.stack([torch.randint(0, v, (rows,), generator=g) for v in inputs.vocab_sizes], dim=1)
    domain = torch.randint(0, inputs.num_domains, (rows,), generator=g)
    return Batch(sparse, torch.randn(rows, inputs.num_dense, generator=g), domain, torch.zeros(rows))


def test_parse_budget() -> None:
    assert parse_budget("model:dnn") == BudgetSpec(model="dnn")
    assert parse_budget("model:dnn@2.5") == BudgetSpec(model="dnn", width=2.5)
    assert parse_budget("1.5e5") == BudgetSpec(flops=150000.0)
    assert parse_budget(1000) == BudgetSpec(flops=1000.0)
    for bad in ("dnn", "-3", "model:", "model:dnn@0"):
        with pytest.raises(BudgetError):
            parse_budget(bad)


def test_resolve_model_budget_is_that_models_flops() -> None:
    batch = _batch(INPUTS)
    assert resolve_budget("model:dnn", INPUTS, batch) == model_flops("dnn", INPUTS, 1.0, batch)
    assert resolve_budget("12345", INPUTS, batch) == 12345.0
    with pytest.raises(BudgetError, match="unknown model"):
        resolve_budget("model:nope", INPUTS, batch)


@pytest.mark.parametrize("name", model_names())
def test_fitted_width_is_within_three_percent(name: str) -> None:
    """Every registered model reaches the dnn budget (its default FLOPs, and 1.7× that) within ±3%."""
    sources = model_class(name).domain_sources
    inputs = INPUTS if "handcrafted" in sources else ModelInputs(INPUTS.vocab_sizes, 2, 1, 8)
    batch = _batch(inputs)
    for factor in (1.0, 1.7):
        budget = factor * model_flops("dnn", inputs, 1.0, batch)
        fit = fit_width(name, inputs, budget, batch)
        assert fit.rel_error <= 0.03
        assert fit.flops == pytest.approx(model_flops(name, inputs, fit.width, batch))
        assert abs(fit.flops - budget) / budget == pytest.approx(fit.rel_error)


def test_unreachable_budget_names_model_and_range() -> None:
    batch = _batch(INPUTS)
    with pytest.raises(BudgetError, match=r"model 'dnn'.*reachable FLOPs/sample span"):
        fit_width("dnn", INPUTS, 5.0, batch)
    with pytest.raises(BudgetError, match=r"above the largest width"):
        fit_width("dnn", INPUTS, 1e13, batch)


def test_adaptive2_star_backbone_fits_the_budget() -> None:
    inputs = ModelInputs(INPUTS.vocab_sizes, 2, 1, 8)
    batch = _batch(inputs)
    budget = model_flops("dnn", inputs, 1.0, batch)
    config = {"backbone": "star"}
    fit = fit_width("adaptive2", inputs, budget, batch, model_config=config)
    assert fit.rel_error <= 0.03
    assert fit.flops == pytest.approx(model_flops("adaptive2", inputs, fit.width, batch, config))
