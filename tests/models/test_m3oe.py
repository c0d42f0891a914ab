"""M3oE's defining mechanism at ML-1M sizes (6 sparse × dim 16 + 1 dense, 3 domains, batch 1024): a row's
representation fuses gate-mixed shared experts with its own domain expert (weight α) and the other domains'
experts (weight (1 − α)/(D − 1) each), and its gate and tower are its domain's."""

from __future__ import annotations

import pytest
import torch

from mdctr.data.tensors import Batch
from mdctr.models import build_model
from mdctr.models.base import MLP, ModelInputs
from mdctr.models.m3oe import M3oE, ParallelExperts

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def m3oe(**config) -> M3oE:
    torch.manual_seed(0)
    model = build_model("m3oe", ML1M, config=config)
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model.eval()


def test_domain_part_is_the_balanced_mix_of_domain_experts(random_batch):
    model = m3oe()
    batch = random_batch(ML1M, ROWS, domain="random")
    z = torch.randn(ROWS, model.config.bottom)
    alpha = model.own_weight()
    assert alpha.item() == pytest.approx(0.8)
    outs = model.domain_experts(z)  # [B, D, H]
    expected = torch.stack(
        [
            alpha * outs[i, d] + (1 - alpha) / 2 * (outs[i].sum(0) - outs[i, d])
            for i, d in enumerate(batch.domain.tolist())
        ]
    )
    torch.testing.assert_close(model.domain_part(z, batch.domain), expected)


def test_other_domains_experts_reach_a_row_only_through_the_balance_weight(random_batch):
    batch = random_batch(ML1M, ROWS, domain="random")
    d0 = batch.domain == 0

    def change_with_expert_2_perturbed(model: M3oE) -> torch.Tensor:
        before = model(batch)
        with torch.no_grad():
            if isinstance(model.domain_experts, ParallelExperts):  # expert 2's block of the fused layer
                model.domain_experts.first.weight[2 * 64 : 3 * 64].add_(1.0)
            else:
                for p in model.domain_experts[2].parameters():
                    p.add_(torch.randn_like(p))
        return (model(batch) - before)[d0].abs()

    assert change_with_expert_2_perturbed(m3oe()).min() > 0  # knowledge transfer: D_2 reaches domain 0
    assert change_with_expert_2_perturbed(m3oe(domain_mix="own")).max() == 0  # routed: it does not
    model = m3oe()
    with torch.no_grad():
        model.w_bal.fill_(30.0)  # α → 1: only the own expert counts
    assert change_with_expert_2_perturbed(model).max() < 1e-5


def test_output_changes_with_the_domain(random_batch):
    model = m3oe()
    batch = random_batch(ML1M, ROWS, domain="random")
    moved = Batch(batch.sparse, batch.dense, (batch.domain + 1) % 3, batch.label)
    assert (model(moved) - model(batch)).abs().min() > 0


def test_fusion_weights_train(random_batch):
    model = m3oe().train()
    batch = random_batch(ML1M, ROWS, domain="random")
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    assert model.w_bal.grad.abs() > 0
    assert model.w_exp.grad.abs() > 0
    # the gates read the bottom through a stop-gradient: their loss gradient never reaches the star layer
    model.zero_grad()
    x = model.embed(batch)
    z = model.star_mlp(model.star(x, batch.domain)) + model.skip(x)
    gate = torch.cat([g(z.detach()) for g in model.gates])
    gate.sum().backward()
    assert all(p.grad is None for p in model.star.parameters())


def test_one_domain_has_no_balance_weight():
    model = build_model("m3oe", ModelInputs(ML1M.vocab_sizes, 1, 1))
    assert model.w_bal is None
    assert model.own_weight().item() == 1.0


def test_parallel_experts_equal_separate_mlps():
    """The fused block is E independent MLPs: expert e's output equals an MLP built from its weight blocks."""
    torch.manual_seed(0)
    block = ParallelExperts(32, (24, 8), 3, batchnorm=True, dropout=0.0).eval()
    with torch.no_grad():
        for norm in block.norms:
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(64, 32)
    out = block(x)
    assert out.shape == (64, 3, 8)
    for e in range(3):
        mlp = MLP(32, (24, 8), batchnorm=True).eval()
        with torch.no_grad():
            mlp[0].weight.copy_(block.first.weight[e * 24 : (e + 1) * 24])
            mlp[0].bias.copy_(block.first.bias[e * 24 : (e + 1) * 24])
            mlp[3].weight.copy_(block.weights[0][e].t())
            mlp[3].bias.copy_(block.biases[0][e, 0])
            for i, norm in ((1, block.norms[0]), (4, block.norms[1])):
                n = mlp[i].num_features
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(mlp[i], name).copy_(getattr(norm, name)[e * n : (e + 1) * n])
        torch.testing.assert_close(out[:, e], mlp(x))
