"""AdaSparse's domain-adaptive weighting at ML-1M sizes (6 sparse × 16 + 1 dense, 3 domains, batch 1024).

The factors must depend on the domain, be exactly zero (a pruned neuron) below ε in the fusion form, lie in
{0, 1} in the binarisation form (with a straight-through gradient) and never prune in the scaling form.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mdctr.models import build_model
from mdctr.models.adasparse import AdaSparse
from mdctr.models.base import ModelInputs

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)
ROWS = 1024


def adasparse(seed: int = 0, sharpen: float = 1.0, **config) -> AdaSparse:
    """A model whose embeddings have a trained-like scale; ``sharpen`` scales the pruners' domain-embedding
    weights, as training does when domains come to prune different neurons."""
    torch.manual_seed(seed)
    model = build_model("adasparse", ML1M, config=config)
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
        e = model.config.domain_embed_dim
        for pruner in model.pruners:
            pruner.weight[:, -e:] *= sharpen
    return model.eval()


def test_fusion_prunes_below_epsilon_and_differs_by_domain(random_batch):
    model = adasparse(sharpen=10.0)
    cfg = model.config
    # the same rows (one seed) put in each domain in turn
    factors = [model.weighting_factors(random_batch(ML1M, ROWS, domain=d)) for d in range(ML1M.num_domains)]
    for per_layer in factors:
        for pi in per_layer:
            nonzero = pi[pi != 0]
            assert (nonzero >= cfg.epsilon).all() and (nonzero <= cfg.beta).all()
            assert 0.01 < (pi == 0).float().mean() < 0.99  # sparse, not dead
    # the same rows under different domains keep different neurons
    for layer in range(len(cfg.hidden)):
        masks = [f[layer] == 0 for f in factors]
        assert (masks[0] != masks[1]).float().mean() > 0.01
        assert (masks[0] != masks[2]).float().mean() > 0.01


def test_pruned_neurons_are_exactly_zero_in_the_layer_output(random_batch):
    model = adasparse(sharpen=10.0)
    batch = random_batch(ML1M, ROWS, domain="random", seed=1)
    captured = []
    hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(o)) for layer in model.layers]
    with torch.no_grad():
        factors = model.weighting_factors(batch)
    for h in hooks:
        h.remove()
    for pre, pi in zip(captured, factors, strict=True):
        out = torch.relu(pre) * pi
        assert (out[pi == 0] == 0).all()
        assert (pi == 0).any()


def test_sparsity_is_reported_per_domain_and_layer(random_batch):
    model = adasparse(sharpen=10.0)
    batch = random_batch(ML1M, ROWS, domain="random", seed=2)
    table = model.sparsity(batch)
    assert table.shape == (ML1M.num_domains, len(model.config.hidden))
    assert ((table > 0) & (table < 1)).all()
    one = model.sparsity(random_batch(ML1M, ROWS, domain=0, seed=2))
    assert torch.isnan(one[1:]).all() and not torch.isnan(one[0]).any()


def test_binarization_is_hard_with_a_straight_through_gradient(random_batch):
    model = adasparse(form="binarization", sharpen=10.0).train()
    batch = random_batch(ML1M, ROWS, domain="random", seed=3)
    for pi in model.weighting_factors(batch):
        assert set(pi.detach().unique().tolist()) <= {0.0, 1.0}
        assert (pi == 0).any() and (pi == 1).any()
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    assert all(p.weight.grad.abs().sum() > 0 for p in model.pruners)


def test_scaling_weights_without_pruning(random_batch):
    model = adasparse(form="scaling", sharpen=10.0)
    for pi in model.weighting_factors(random_batch(ML1M, ROWS, domain="random", seed=4)):
        assert (pi > 0).all() and (pi < model.config.beta).all()
        assert pi.std() > 0.05  # neuron-level weights, not a constant


def test_bad_form_is_refused():
    with pytest.raises(ValueError, match="form"):
        build_model("adasparse", ML1M, config={"form": "prune"})
