"""M2M's meta learner at ML-1M sizes (6 sparse × 16 + 1 dense, 3 domains, batch 1024).

The meta attention must depend on the scenario, and the per-scenario weight generation (the speed trick:
weights generated once per scenario and rows routed to them) must equal the paper's per-row meta unit.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models import build_model
from mdctr.models.base import ModelInputs
from mdctr.models.m2m import M2M

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def m2m(seed: int = 0) -> M2M:
    torch.manual_seed(seed)
    model = build_model("m2m", ML1M)
    with torch.no_grad():  # trained embeddings are far from their N(0, 1e-4) init
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model.eval()


def test_meta_attention_changes_with_the_scenario(random_batch):
    model = m2m()
    with torch.no_grad():
        alphas = [model.attention(random_batch(ML1M, ROWS, domain=d)) for d in range(ML1M.num_domains)]
    for a in alphas:
        assert a.shape == (ROWS, model.config.num_experts)
        assert torch.allclose(a.sum(dim=1), torch.ones(ROWS), atol=1e-5)
    # the same rows under another scenario get other expert weights (every row, not a few)
    for i in range(len(alphas)):
        for j in range(i + 1, len(alphas)):
            diff = (alphas[i] - alphas[j]).abs().sum(dim=1)
            assert (diff > 1e-4).all(), (i, j, diff.min())
    # and the attention is not uniform: it reads the expert views
    assert alphas[0].std(dim=0).mean() > 1e-4


def _per_row_reference(model: M2M, batch: Batch) -> torch.Tensor:
    """The paper's meta unit written per row: every row generates its own W, b from its S."""
    cfg = model.config
    x = model.embed(batch)
    views = torch.stack([e(x) for e in model.experts], dim=1)  # [B, K, V]
    s = model.scenario(model.domain_embedding(batch.domain))  # [B, s] per row
    w, b = model.attention_unit(s)  # [B, a, V + t]
    task = model.task.expand(views.shape[0], views.shape[1], -1)
    inp = torch.cat([views, task], dim=2)  # [B, K, V + t]
    hidden = F.leaky_relu(torch.einsum("bai,bki->bka", w, inp) + b[:, None, :], cfg.negative_slope)
    alpha = torch.softmax(model.attention_v(hidden).squeeze(-1), dim=1)
    h = torch.einsum("bk,bkv->bv", alpha, views)
    for unit in model.tower:
        w, b = unit(s)
        h = F.leaky_relu(torch.einsum("boi,bi->bo", w, h) + b, cfg.negative_slope) + h
    return model.head(h).squeeze(-1)


def test_routed_scenario_weights_equal_the_per_row_meta_unit(random_batch):
    model = m2m(seed=1)
    batch = random_batch(ML1M, ROWS, domain="random", seed=2)
    with torch.no_grad():
        assert torch.allclose(model(batch), _per_row_reference(model, batch), atol=1e-4)


def test_generated_weights_train_per_scenario(random_batch):
    """A loss on one scenario's rows moves the generator through that scenario's knowledge only: the other
    scenarios' embeddings get no gradient."""
    model = m2m().train()
    batch = random_batch(ML1M, ROWS, domain=1)
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    grad = model.domain_embedding.weight.grad
    assert grad[1].abs().sum() > 0
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
    assert model.attention_unit.weight.weight.grad.abs().sum() > 0
    assert all(u.weight.weight.grad.abs().sum() > 0 for u in model.tower)
