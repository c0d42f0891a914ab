from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models import ModelInputs, build_model, model_names
from mdctr.models.base import MLP, CTRModel, route
from mdctr.routing.flops import flop_breakdown, flops_per_sample, op_census, uncounted_ops

INPUTS = ModelInputs(vocab_sizes=(11, 7, 5), num_dense=2, num_domains=3, embed_dim=4)  # input_dim = 14


class RoutedToy(CTRModel):
    """Domain d: Linear(14 → SIZES[d]) → ReLU → Linear(SIZES[d] → 1), routed (not masked)."""

    SIZES = (2, 8, 32)

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, inputs: ModelInputs) -> None:
        super().__init__(inputs, self.Config())
        self.towers = nn.ModuleList(
            nn.Sequential(MLP(inputs.input_dim, (h,)), nn.Linear(h, 1)) for h in self.SIZES
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        return route(self.embed(batch), batch.domain, list(self.towers), 1).squeeze(-1)


def test_mlp_flops_equal_two_in_out_per_linear(random_batch: Any) -> None:
    model = build_model("dnn", INPUTS, config={"hidden": (16, 8)})
    expected = 2 * (14 * 16 + 16 * 8 + 8 * 1)  # embedding lookups, bias adds and ReLU count zero
    assert flops_per_sample(model, random_batch(INPUTS, 32, domain=[0] * 32)) == expected
    assert flop_breakdown(model, random_batch(INPUTS, 32, domain=[0] * 32)) == {"addmm": expected}


def test_routed_flops_follow_the_domain_mix(random_batch: Any) -> None:
    model = RoutedToy(INPUTS)
    per_domain = [2 * (14 * h + h) for h in RoutedToy.SIZES]
    mix = [0] * 10 + [1] * 5 + [2] * 1  # absent domains cost nothing; one-row groups still count
    assert flops_per_sample(model, random_batch(INPUTS, len(mix), domain=mix)) == pytest.approx(
        (10 * per_domain[0] + 5 * per_domain[1] + per_domain[2]) / 16
    )
    assert flops_per_sample(model, random_batch(INPUTS, 8, domain=[2] * 8)) == per_domain[2]
    assert flops_per_sample(model, random_batch(INPUTS, 8, domain=[0] * 8)) == per_domain[0]


def test_separate_miner_flops_are_added_and_its_codes_route(random_batch: Any) -> None:
    class DenseMiner(nn.Module):
        """codes = argmax(Linear(dense 2 → 3)): 2·2·3 = 12 FLOPs per sample."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 3)

        def forward(self, batch: Batch) -> torch.Tensor:
            return self.proj(batch.dense).argmax(-1)

    torch.manual_seed(0)
    model, miner = RoutedToy(INPUTS), DenseMiner()
    batch = random_batch(INPUTS, 64, domain=[0] * 64)  # the batch's own domain column must be ignored
    with torch.no_grad():
        codes = miner(batch)
    per_domain = torch.tensor([2 * (14 * h + h) for h in RoutedToy.SIZES], dtype=torch.float64)
    expected = 12 + float(per_domain[codes].mean())
    assert flops_per_sample(model, batch, miner=miner) == pytest.approx(expected)


def test_ops_without_a_builtin_formula_are_counted(random_batch: Any) -> None:
    class Uses(nn.Module):
        def forward(self, batch: Batch) -> torch.Tensor:
            x = batch.dense  # [B, 2]
            c = torch.ones(5, 2)
            d = torch.cdist(x, c)  # 3·B·5·2
            v = torch.mv(c, torch.ones(2))  # 2·5·2, independent of B
            return d.sum(-1) + v.sum()

    b = random_batch(INPUTS, 10, domain=[0] * 10)
    total = flops_per_sample(Uses(), b) * len(b)
    assert total == 3 * 10 * 5 * 2 + 2 * 5 * 2


def test_flops_are_counted_in_eval_mode_and_mode_is_restored(random_batch: Any) -> None:
    model = build_model("dnn", INPUTS, config={"dropout": 0.5, "batchnorm": True})
    model.train()
    assert "native_dropout" not in op_census(model, random_batch(INPUTS, 8, domain=[0] * 8))
    assert model.training


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_runs_only_counted_or_free_ops(name: str, random_batch: Any) -> None:
    cls = build_model(name, INPUTS).__class__
    inputs = INPUTS if "handcrafted" in cls.domain_sources else ModelInputs(INPUTS.vocab_sizes, 2, 1, 4)
    model = build_model(name, inputs)
    batch = random_batch(inputs, 64)
    assert uncounted_ops(model, batch) == set()
    assert flops_per_sample(model, batch) > 0
