"""EPNet alone at ML-1M sizes (6 sparse × 16 + 1 dense, 3 domains, batch 1024): the embedding gate is
pepnet's module, depends on the domain, and a neutral gate leaves a plain DNN."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mdctr.models import build_model
from mdctr.models import pepnet as pepnet_module
from mdctr.models.base import ModelInputs

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def epnet(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("epnet", ML1M)
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model.eval()


def test_gate_is_pepnets_and_depends_on_the_domain(random_batch):
    model = epnet()
    assert isinstance(model.epnet, pepnet_module.GateNU)
    assert isinstance(build_model("pepnet", ML1M).epnet, pepnet_module.GateNU)
    with torch.no_grad():
        gates = [model.gate(random_batch(ML1M, ROWS, domain=d)) for d in range(ML1M.num_domains)]
    for g in gates:
        assert g.shape == (ROWS, ML1M.input_dim)
        assert ((g > 0) & (g < 2)).all()
    assert ((gates[0] - gates[1]).abs().sum(dim=1) > 1e-4).all()
    assert ((gates[0] - gates[2]).abs().sum(dim=1) > 1e-4).all()


def test_neutral_gate_is_the_dnn(random_batch):
    """With the gate's last layer at zero, δ = 2·σ(0) = 1 and epnet computes exactly its DNN."""
    model = epnet()
    with torch.no_grad():
        model.epnet[2].weight.zero_()
        model.epnet[2].bias.zero_()
        batch = random_batch(ML1M, ROWS, domain="random", seed=1)
        expected = model.head(model.mlp(model.embed(batch))).squeeze(-1)
        assert torch.allclose(model(batch), expected, atol=1e-6)


def test_gate_does_not_reshape_the_embedding(random_batch):
    """Stop-gradient: the embedding's gradient is δ ⊙ ∂L/∂(δ ⊙ x), with no path through the gate's input."""
    model = epnet().train()
    batch = random_batch(ML1M, ROWS, domain="random", seed=2)
    x = model.embed(batch).detach().requires_grad_(True)
    dom = model.domain_embedding(batch.domain)
    delta = pepnet_module.epnet_gate(model.epnet, dom, x)
    out = delta * x
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * upstream).sum(), x)
    assert torch.allclose(grad, delta.detach() * upstream, atol=1e-6)
    loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
    loss.backward()
    assert model.epnet[0].weight.grad.abs().sum() > 0
