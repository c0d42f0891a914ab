"""SAR-Net at ML-1M sizes (6 sparse × 16 + 1 dense, 3 domains, batch 1024): the scenario transfer and the
scenario experts act on their own scenario's rows only, and the debias networks act in training only."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mdctr.models import build_model
from mdctr.models.base import ModelInputs
from mdctr.models.sarnet import SARNet

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def sarnet(seed: int = 0, **config) -> SARNet:
    torch.manual_seed(seed)
    model = build_model("sarnet", ML1M, config=config)
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model.eval()


def test_transfer_starts_shared_and_is_per_scenario(random_batch):
    model = sarnet()
    batch = random_batch(ML1M, ROWS, domain="random")
    with torch.no_grad():
        assert torch.equal(model.transfer(batch), model.embed(batch))  # γ = 1, β = 0 at init
        before = model(batch)
        model.gamma[1].mul_(1.5)
        model.beta[1].add_(0.3)
        after = model(batch)
    mine = batch.domain == 1
    assert not torch.allclose(before[mine], after[mine])
    assert torch.equal(before[~mine], after[~mine])


def test_scenario_experts_serve_only_their_scenario(random_batch):
    model = sarnet()
    batch = random_batch(ML1M, ROWS, domain="random", seed=1)
    with torch.no_grad():
        before = model(batch)
        for p in model.blocks[2].parameters():
            p.add_(0.2 * torch.randn_like(p))
        after = model(batch)
    mine = batch.domain == 2
    assert (before[mine] - after[mine]).abs().min() > 0
    assert torch.equal(before[~mine], after[~mine])


def test_debias_networks_act_in_training_only(random_batch):
    model = sarnet()
    batch = random_batch(ML1M, ROWS, domain="random", seed=2)
    with torch.no_grad():
        served = model.eval()(batch)
        trained = model.train()(batch)  # (training mode normalises by the batch: running stats don't matter)
        for p in model.domain_embedding.parameters():
            p.add_(1.0)
        trained_shifted = model(batch)
        model.eval()
        for m in model.modules():  # undo the running-statistic updates of the two training passes
            if isinstance(m, torch.nn.BatchNorm1d):
                m.reset_running_stats()
        served_fresh = sarnet().eval()(batch)
        served_shifted = model(batch)
    assert torch.equal(served, served_fresh)
    assert torch.equal(served, served_shifted)  # inference never reads the bias input
    assert (trained - trained_shifted).abs().mean() > 1e-3  # training does
    model.train()
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    assert all(e.bias.weight.grad.abs().sum() > 0 for e in model.shared)
    assert all(e.bias.weight.grad.abs().sum() > 0 for b in model.blocks for e in b.experts)


def test_without_debias_there_are_no_bias_networks(random_batch):
    model = sarnet(debias=False)
    assert model.domain_embedding is None
    assert all(e.bias is None for e in model.shared)
    out = model.train()(random_batch(ML1M, ROWS, domain="random", seed=3))
    assert out.shape == (ROWS,) and torch.isfinite(out).all()


def test_needs_an_expert():
    with pytest.raises(ValueError, match="at least one expert"):
        build_model("sarnet", ML1M, config={"num_shared": 0, "num_specific": 0})
