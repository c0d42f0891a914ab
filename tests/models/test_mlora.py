"""MLoRA's defining mechanism at ML-1M sizes (6 sparse × dim 16 + 1 dense, 3 domains, batch 1024): a per-domain
low-rank delta on every shared layer that starts at exactly zero (the shared network at step 0)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models import build_model
from mdctr.models.base import ModelInputs
from mdctr.models.mlora import MLoRA

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def mlora(**config) -> MLoRA:
    torch.manual_seed(0)
    model = build_model("mlora", ML1M, config=config)
    with torch.no_grad():  # trained embeddings are far from their tiny init
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model


def shared_only(model: MLoRA, batch: Batch) -> torch.Tensor:
    model.use_adapters = False
    try:
        return model(batch)
    finally:
        model.use_adapters = True


@pytest.mark.parametrize("init", ["offset", "zeros"])
def test_step_zero_is_the_shared_network(init, random_batch):
    model = mlora(adapter_init=init)
    batch = random_batch(ML1M, ROWS, domain="random")
    for train in (True, False):
        model.train(train)
        torch.testing.assert_close(model(batch), shared_only(model, batch), rtol=0, atol=1e-5)
    for adapter in model.adapters:
        for d in range(ML1M.num_domains):
            assert adapter.delta_weight(d).abs().max() < 1e-6


def test_offset_init_trains_both_factors_from_the_first_step(random_batch):
    model = mlora().train()
    batch = random_batch(ML1M, ROWS, domain="random")
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    for adapter in model.adapters:
        assert adapter.a.grad.abs().amax(dim=(1, 2)).min() > 0  # every domain's A
        assert adapter.b.grad.abs().amax(dim=(1, 2)).min() > 0


def test_delta_is_per_domain_and_low_rank(random_batch):
    model = mlora().eval()
    batch = random_batch(ML1M, ROWS, domain="random")
    before = model(batch)
    with torch.no_grad():  # train domain 1's adapters only
        for adapter in model.adapters:
            adapter.b[1].add_(torch.randn_like(adapter.b[1]))
    after = model(batch)
    d1 = batch.domain == 1
    assert torch.equal(after[~d1], before[~d1])  # the other domains' rows see only the shared weights
    assert (after[d1] - before[d1]).abs().min() > 0
    for adapter, rank in zip(model.adapters, model.config.ranks, strict=True):
        assert adapter.a.shape == (ML1M.num_domains, rank, adapter.a.shape[2])
        # B A − B₀ A₀ has rank ≤ 2r, and ΔW's rank is far below the layer's
        assert torch.linalg.matrix_rank(adapter.delta_weight(1)) <= 2 * rank
        assert torch.linalg.matrix_rank(adapter.delta_weight(0)) == 0


def test_delta_matches_the_materialised_weights(random_batch):
    model = mlora().eval()
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.b.add_(torch.randn_like(adapter.b))
    batch = random_batch(ML1M, ROWS, domain="random")
    x = model.embed(batch)
    h = x
    for linear, norm, adapter in zip(model.linears, model.norms, model.adapters, strict=True):
        w = torch.stack([adapter.delta_weight(d) for d in range(ML1M.num_domains)])[
            batch.domain
        ]  # [B, out, in]
        h = torch.relu(norm(linear(h) + torch.einsum("boi,bi->bo", w, h)))
    torch.testing.assert_close(model(batch), model.head(h).squeeze(-1), rtol=1e-4, atol=1e-4)


def test_config_is_checked():
    with pytest.raises(ValueError, match="one rank per hidden layer"):
        build_model("mlora", ML1M, config={"ranks": (4,)})
    with pytest.raises(ValueError, match="adapter_init"):
        build_model("mlora", ML1M, config={"adapter_init": "nope"})
