"""PPNet's defining mechanism at ML-1M sizes (6 sparse × dim 16 + 1 dense, 3 domains, batch 1024): every hidden
layer is scaled by a gate in (0, 2) over the personal prior (user/item ids + domain), which the gates train,
while the rest of the embedding reaches the gates only through a stop-gradient; there is no EPNet."""

from __future__ import annotations

import pytest
import torch

from mdctr.data.tensors import Batch
from mdctr.models import build_model
from mdctr.models.base import ModelInputs
from mdctr.models.pepnet import GateNU
from mdctr.models.ppnet import PPNet

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def ppnet(**config) -> PPNet:
    torch.manual_seed(0)
    model = build_model("ppnet", ML1M, config=config)
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model


def test_gates_are_pepnets_gate_nu_one_per_layer_and_no_epnet(random_batch):
    model = ppnet()
    assert len(model.gates) == len(model.layers) == 2
    assert all(isinstance(g, GateNU) for g in model.gates)
    assert not hasattr(model, "epnet")
    gates = model.eval().gate_values(random_batch(ML1M, ROWS, domain="random"))
    assert [g.shape for g in gates] == [(ROWS, 256), (ROWS, 128)]
    assert all(((g > 0) & (g < 2)).all() for g in gates)


def test_gate_is_personal_and_domain_aware(random_batch):
    model = ppnet().eval()
    batch = random_batch(ML1M, ROWS, domain="random")
    base = model.gate_values(batch)[0]
    other_user = Batch(
        (batch.sparse + torch.tensor([1, 0, 0, 0, 0, 0])) % 3001, batch.dense, batch.domain, batch.label
    )
    other_domain = Batch(batch.sparse, batch.dense, (batch.domain + 1) % 3, batch.label)
    assert (model.gate_values(other_user)[0] - base).abs().amax(dim=1).min() > 0  # every row's gate moves
    assert (model.gate_values(other_domain)[0] - base).abs().amax(dim=1).min() > 0
    assert not torch.equal(model(other_domain), model(batch))


def test_only_the_prior_trains_through_the_gates(random_batch):
    model = ppnet().train()
    batch = random_batch(ML1M, ROWS, domain="random")
    table = model.embedding.table.weight
    prior = model.gate_values(batch)
    (grad,) = torch.autograd.grad(sum(g.sum() for g in prior), table)
    rows = batch.sparse + model.embedding.offsets  # table rows of each feature value
    user_item = torch.unique(rows[:, :2])
    others = torch.unique(rows[:, 2:])
    others = others[~torch.isin(others, user_item)]
    assert grad[user_item].abs().sum(dim=1).min() > 0  # the ids' embeddings are trained by the gates
    assert grad[others].abs().sum() == 0  # the rest is read through sg[·]


def test_bad_prior_feature_is_named():
    with pytest.raises(ValueError, match=r"prior_features \[9\]"):
        build_model("ppnet", ML1M, config={"prior_features": (0, 9)})
