"""AdaptDHM's defining mechanism at ML-1M sizes (6 sparse × dim 16 + 1 dense, batch 1024): rows are clustered
by dynamic routing over unit-norm centres (refined in training, fixed at eval, hand-crafted domains ignored)
and each distribution's head sees only its own rows."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models import build_model
from mdctr.models.adaptdhm import AdaptDHM
from mdctr.models.base import ModelInputs

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def adaptdhm(**config) -> AdaptDHM:
    torch.manual_seed(0)
    model = build_model("adaptdhm", ML1M, config=config)
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model


def test_routing_refines_centres_in_training_only(random_batch):
    model = adaptdhm()
    batch = random_batch(ML1M, ROWS, domain="random")
    start = model.centers.clone()
    model.eval()(batch)
    assert torch.equal(model.centers, start)
    x = model.embed(batch).detach()
    torch.testing.assert_close(model.last_codes, (x @ start.t()).argmax(1), rtol=0, atol=0)
    model.train()(batch)
    assert not torch.equal(model.centers, start)
    torch.testing.assert_close(model.centers.norm(dim=1), torch.ones(3))
    # the EMA step by hand, without the restart: c ← normalise(β c + (1 − β) Σ_i r_ik x_i)
    ref = adaptdhm(restart_empty=False, routing_iters=1).train()
    c0 = ref.centers.clone()
    ref(batch)
    r = torch.softmax(x @ c0.t(), dim=1)
    torch.testing.assert_close(ref.centers, F.normalize(0.9 * c0 + 0.1 * r.t() @ x, dim=1))


def test_handcrafted_domain_is_ignored(random_batch):
    model = adaptdhm().eval()
    batch = random_batch(ML1M, ROWS, domain="random")
    moved = Batch(batch.sparse, batch.dense, (batch.domain + 1) % 3, batch.label)
    assert torch.equal(model(batch), model(moved))
    assert AdaptDHM.domain_sources == ("mined",) and AdaptDHM.mines_domains


def test_every_distribution_gets_rows_and_heads_see_only_their_rows(random_batch):
    model = adaptdhm().train()
    batch = random_batch(ML1M, ROWS, domain="random")
    with torch.no_grad():  # a collapsed start: all centres but one far from every row
        model.centers.copy_(
            F.normalize(torch.eye(3, ML1M.input_dim) * torch.tensor([[1.0], [-1.0], [-1.0]]), dim=1)
        )
    logits = model(batch)
    codes = model.last_codes
    assert torch.bincount(codes, minlength=3).min() > 0  # restarted centres took the worst-fitting rows
    F.binary_cross_entropy_with_logits(logits[codes == 1], batch.label[codes == 1]).backward()
    w = model.fcn.domain_w[0].grad
    assert w[1].abs().sum() > 0 and w[0].abs().sum() == 0 and w[2].abs().sum() == 0


def test_rows_of_one_distribution_share_a_head(random_batch):
    model = adaptdhm().eval()
    batch = random_batch(ML1M, ROWS, domain="random")
    logits = model(batch)
    codes = model.last_codes
    x = model.norm(model.embed(batch))
    for k in range(3):
        rows = codes == k
        if rows.any():
            head = model.fcn._domain(k)
            torch.testing.assert_close(logits[rows], head(x[rows]).squeeze(-1))


def test_config_is_checked():
    with pytest.raises(ValueError, match="beta"):
        build_model("adaptdhm", ML1M, config={"beta": 1.0})
