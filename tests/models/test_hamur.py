"""HAMUR's adapter works in function at real sizes (ML-1M widths, batch 1024), not only on toy tensors.

ML-1M: 6 sparse features × dim 16 + 1 dense (age), towers [256, 128], hyper [64], k = 35, r = 32, 3 domains.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models import build_model
from mdctr.models.base import ModelInputs
from mdctr.models.hamur import HAMUR, HamurTower, HyperAdapter, HyperNetwork

ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, 3)  # vocabularies of users 1–2999 (+ OOV)
ROWS = 1024
#: |pre-sigmoid| above this: σ' < 0.018, the unit barely passes a gradient
SATURATED = 4.0


def hamur(seed: int = 0, **config) -> HAMUR:
    torch.manual_seed(seed)
    model = build_model("hamur", ML1M, config=config)
    # trained embeddings are far from their N(0, 1e-4) init; give them a realistic scale
    with torch.no_grad():
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model


def pre_activations(model: HAMUR) -> torch.Tensor:
    """Pre-sigmoid bottleneck values of every adapter from the last forward, [rows, r] stacked."""
    return torch.cat([a.pre_activation for ads in model.adapters for a in ads.values()])


def test_tower_blocks_are_named_and_adapters_hook_by_name():
    model = hamur(adapter_layers=2)
    tower = model.towers[0]
    assert list(tower.blocks) == ["layer1", "layer2"]
    for block in tower.blocks.values():
        assert [type(m) for m in block] == [nn.Linear, type(block.norm), nn.ReLU]
        assert isinstance(block.norm, nn.BatchNorm1d)
    assert model.adapted == ("layer1", "layer2")
    assert hamur(adapter_layers=1).adapted == ("layer2",)
    assert set(model.adapters[0]) == {"layer1", "layer2"}
    with pytest.raises(KeyError, match="layer9"):
        tower(
            torch.zeros(4, ML1M.input_dim), torch.zeros(4, 35, 35), nn.ModuleDict({"layer9": nn.Identity()})
        )


def test_hyper_network_has_linear_bn_relu_on_every_layer():
    net = hamur().hyper
    assert isinstance(net, HyperNetwork)
    assert [name for name, _ in net.named_children()] == ["layer1", "out"]
    for block in net.children():
        assert [type(m).__name__ for m in block] == ["Linear", "BatchNorm1d", "ReLU"]
    assert net[-1].linear.out_features == 35 * 35
    assert isinstance(hamur(hyper_output_block=False).hyper[-1], nn.Linear)


def test_adapter_output_when_off_is_the_bare_tower(random_batch):
    model = hamur().eval()
    batch = random_batch(ML1M, ROWS, domain="random")
    model.adapter_mode = "off"
    off = model(batch)
    x = model.embed(batch)
    bare = torch.empty(ROWS)
    for d, tower in enumerate(model.towers):
        rows = batch.domain == d
        h = x[rows]
        for block in tower.blocks.values():
            h = block(h)
        bare[rows] = tower.head(h).squeeze(-1)
    assert torch.allclose(off, bare, atol=1e-5)
    model.adapter_mode = "on"
    assert not torch.allclose(model(batch), off, atol=1e-3)
    model.adapter_mode = "typo"
    with pytest.raises(ValueError, match="adapter_mode"):
        model(batch)


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("layers", [1, 2])
def test_gradients_reach_u_and_v_at_real_size(layers, norm, random_batch):
    model = hamur(adapter_layers=layers, adapter_norm=norm).train()
    batch = random_batch(ML1M, ROWS, domain="random")
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    for d, adapters in enumerate(model.adapters):
        for name, adapter in adapters.items():
            for p in ("u1", "v1", "u2", "v2", "b1", "b2"):
                if p == "b2" and norm == "batch":
                    assert adapter.b2 is None  # a batch norm's centring would cancel it exactly
                    continue
                grad = getattr(adapter, p).grad
                assert grad is not None and torch.isfinite(grad).all(), (d, name, p)
                # a live factor: the adapter's output is scaled by γ (adapter_scale), and so is every gradient
                # into it; measured ≥ 8e-5·γ here (8e-6 at γ = 0.1, 8.7e-7 at the default 0.01; tower layer
                # weights: ≈ 4e-4); U = V = ones gives exactly 0 for U₁, V₁, b₁ (see the next test)
                bound = 1e-5 * model.config.adapter_scale
                assert grad.abs().mean() > bound, (d, name, p, float(grad.abs().mean()), bound)
            # the r bottleneck units get different gradients (not one unit copied r times)
            assert adapter.v1.grad.std(dim=1).mean() > 1e-6 * adapter.v1.grad.abs().mean() + 1e-9


def test_ones_init_saturates_and_kills_the_down_projection_gradient(random_batch):
    """The authors' U = V = ones at real sizes: what the default init avoids (so the measure can fail)."""
    model = hamur(adapter_init="ones", adapter_norm="batch", adapter_scale=1.0).train()
    batch = random_batch(ML1M, ROWS, domain="random")
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    pre = pre_activations(model)
    assert (pre.abs() > SATURATED).float().mean() > 0.99
    assert torch.equal(pre, pre[:, :1].expand_as(pre))  # all r units identical
    for p in ("u1", "v1", "b1"):
        assert all(float(getattr(ads["layer2"], p).grad.abs().max()) == 0.0 for ads in model.adapters), p


@pytest.mark.parametrize("init", ["scaled", "normal"])
def test_under_half_of_the_bottleneck_is_saturated_at_init(init, random_batch):
    model = hamur(adapter_init=init).train()
    model(random_batch(ML1M, ROWS, domain="random"))
    pre = pre_activations(model)
    # in training, sampled towers (the default) run each domain's last adapter on its own rows only (the other
    # domains' sampled rows feed the blocks' statistics and leave before it)
    assert model.config.tower_batch == "sampled" and pre.shape == (ROWS, 32)
    assert (pre.abs() > SATURATED).float().mean() < 0.5
    assert pre.std(dim=1).min() > 0  # the units differ within every row


def test_adapter_output_depends_on_h_of_x(random_batch):
    model = hamur().eval()
    a = random_batch(ML1M, ROWS, domain="random", seed=1)
    # same domains and dense, other ids
    b = replace(a, sparse=(a.sparse + 7) % torch.tensor(ML1M.vocab_sizes))
    xa, xb = model.embed(a), model.embed(b)
    ha, hb = model.hyper(xa), model.hyper(xb)
    assert (ha - hb).abs().mean() > 1e-2 * ha.abs().mean()  # H changes with x
    adapter = model.adapters[0]["layer2"]
    h = model.towers[0].blocks["layer2"](model.towers[0].blocks["layer1"](xa))
    da, db = adapter.delta(h, ha), adapter.delta(h, hb)  # same h: only H differs
    assert (da - db).abs().mean() > 1e-2 * da.abs().mean()
    # and the model's output moves when H is removed (constant mode) — the adapter is not inert
    on = model(a)
    model.adapter_mode = "constant"
    assert (model(a) - on).abs().mean() > 1e-3


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("per_domain", [True, False])
def test_eval_output_is_independent_of_the_other_rows(norm, per_domain, random_batch):
    model = hamur(adapter_norm=norm, adapter_per_domain=per_domain)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for seed in range(3):  # move the running statistics away from their init
        batch = random_batch(ML1M, ROWS, domain="random", seed=seed)
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model.train()(batch), batch.label).backward()
        opt.step()
    model.eval()
    full = random_batch(ML1M, ROWS, domain="random", seed=5)
    other = random_batch(ML1M, ROWS, domain="random", seed=6)
    mixed = Batch(
        torch.cat([full.sparse[:100], other.sparse]),
        torch.cat([full.dense[:100], other.dense]),
        torch.cat([full.domain[:100], other.domain]),
        torch.cat([full.label[:100], other.label]),
    )
    first = model(full)[:100]
    assert torch.allclose(model(mixed)[:100], first, atol=1e-5)
    one = Batch(full.sparse[:1], full.dense[:1], full.domain[:1], full.label[:1])
    assert torch.allclose(model(one), first[:1], atol=1e-5)


def test_batch_norm_adapter_uses_batch_statistics_only_in_training():
    adapter = HyperAdapter(16, 5, 4, norm="batch")
    h, hyper = torch.rand(64, 16), torch.rand(64, 5, 5)
    train_out = adapter.train()(h, hyper)
    assert not torch.allclose(train_out[:8], adapter(h[:8], hyper[:8]))  # batch statistics
    adapter.eval()
    assert torch.allclose(adapter(h, hyper)[:8], adapter(h[:8], hyper[:8]), atol=1e-6)
    assert adapter.norm.running_mean.abs().sum() > 0  # the training pass updated the running estimate


def test_hyper_adapter_matches_materialised_weights():
    torch.manual_seed(0)
    ad = HyperAdapter(dim=6, k=4, bottleneck=3, norm="none", init="normal")
    with torch.no_grad():
        for p in (ad.b1, ad.b2, ad.norm.weight, ad.norm.bias):
            p.normal_()
    h, hyper = torch.randn(5, 6), torch.randn(5, 4, 4)
    w_down = ad.u1 @ hyper @ ad.v1  # [5, 6, 3]: per-sample weights, the slow way
    w_up = ad.u2 @ hyper @ ad.v2
    s = torch.sigmoid(torch.einsum("nd,ndr->nr", h, w_down) + ad.b1)
    up = torch.einsum("nr,nrd->nd", s, w_up) + ad.b2
    expected = h + up * ad.norm.weight + ad.norm.bias
    assert torch.allclose(ad(h, hyper), expected, atol=1e-4)


def test_bad_adapter_options_fail_with_their_name():
    for key, value in (("adapter_norm", "running"), ("adapter_init", "zeros")):
        with pytest.raises(ValueError, match=key):
            build_model("hamur", ML1M, config={key: value})
    assert isinstance(hamur().towers[0], HamurTower)


def test_routing_at_eval_scores_a_row_as_the_masked_towers_would(random_batch):
    """Eval routes even with tower_batch="masked": every BatchNorm then uses running statistics, so running
    every tower on the whole batch and keeping each row's own domain gives the same scores."""
    model = hamur(seed=3, tower_batch="masked")
    batch = random_batch(ML1M, ROWS, domain="random")
    model.train()(batch)  # move the running statistics away from their init
    model.eval()
    with torch.no_grad():
        x = model.embed(batch)
        every = torch.cat([model._tower(d, x) for d in range(ML1M.num_domains)], dim=1)  # [B, domains]
        masked_by_hand = every.gather(1, batch.domain.unsqueeze(1)).squeeze(1)
        assert torch.allclose(model(batch), masked_by_hand, atol=1e-5)


def test_masked_towers_normalise_with_the_statistics_of_every_row(random_batch):
    batch = random_batch(ML1M, ROWS, domain="random")
    for mode, rows_seen in (("masked", torch.ones(ROWS, dtype=torch.bool)), ("routed", batch.domain == 1)):
        model = hamur(seed=1, tower_batch=mode).train()
        norm = model.towers[1].blocks["layer1"].norm
        x = model.embed(batch).detach()
        z = model.towers[1].blocks["layer1"].linear(x).detach()
        model(batch)
        # running mean after one step from 0, momentum 0.1: 0.1 × the batch mean over the rows the tower ran on
        expected = 0.1 * z[rows_seen].mean(dim=0)
        assert torch.allclose(norm.running_mean, expected, atol=1e-5), mode
        other = 0.1 * z[~rows_seen].mean(dim=0) if mode == "routed" else None
        if other is not None:  # routed: the other domains' rows really were left out
            assert not torch.allclose(norm.running_mean, other, atol=1e-3)


def test_masked_towers_cost_more_only_in_training(random_batch):
    from torch.utils.flop_counter import FlopCounterMode

    from mdctr.routing import model_flops

    batch = random_batch(ML1M, ROWS, domain="random")
    # served (eval) FLOPs, the ones the budget matches: the same as routed towers
    assert model_flops("hamur", ML1M, 1.0, batch, {"tower_batch": "masked"}, None) == model_flops(
        "hamur", ML1M, 1.0, batch, {}, None
    )

    def train_flops(model, run) -> int:
        with FlopCounterMode(display=False) as counter:
            run(model)
        return counter.get_total_flops()

    model = {mode: hamur(tower_batch=mode).train() for mode in ("routed", "masked")}
    routed, masked = (train_flops(model[mode], lambda m: m(batch)) for mode in ("routed", "masked"))
    hyper = train_flops(model["routed"], lambda m: m.hyper(m.embed(batch)))  # H(x) of every row, once
    towers = routed - hyper  # routed: each row through its own tower only
    assert hyper > 0 and towers > 0
    # in training the towers run on every row, once per domain; the hyper-network once for all of them
    assert masked == ML1M.num_domains * towers + hyper
    with pytest.raises(ValueError, match="tower_batch"):
        hamur(tower_batch="everywhere")


def test_adapter_off_entry_is_the_same_towers_without_adapter_or_hyper_network(random_batch):
    """``adapter_layers=0``: the adapter-off ablation as a trainable entry (same towers, their FLOPs only)."""
    from mdctr.routing import model_flops

    batch = random_batch(ML1M, ROWS, domain="random")
    on, off = hamur(seed=1), hamur(seed=1, adapter_layers=0)
    assert off.hyper is None and off.adapted == ()
    assert not any("adapters" in name or name.startswith("hyper") for name, _ in off.named_parameters())
    # every parameter of the adapter-off model is one of HAMUR's (embedding, towers): nothing else
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith(("hyper.", "adapters.")) for k in unexpected)
    for mode in ("masked", "routed"):  # trains in both tower modes; gradients reach every parameter
        model = hamur(adapter_layers=0, tower_batch=mode).train()
        F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # eval: scores each row by its bare tower, as the adapter_mode="off" ablation of a trained model does
    on.eval().adapter_mode = "off"
    assert torch.allclose(off.eval()(batch), on(batch), atol=1e-5)
    flops_on = model_flops("hamur", ML1M, 1.0, batch, {}, None)
    flops_off = model_flops("hamur", ML1M, 1.0, batch, {"adapter_layers": 0}, None)
    assert 0 < flops_off < flops_on


def test_hyper_domain_feeds_the_routing_domain_to_the_hyper_network(random_batch):
    """``hyper_domain=True`` (the paper's input): H depends on the row's domain, and routing = masking at eval."""
    model = hamur(hyper_domain=True).train()
    batch = random_batch(ML1M, ROWS, domain="random")
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    grad = model.hyper_domain_embedding.weight.grad
    assert grad is not None and (grad.abs().sum(dim=1) > 0).all()  # every domain's row learns
    model.eval()
    x = model.embed(batch)
    zeros, ones = torch.zeros(ROWS, dtype=torch.long), torch.ones(ROWS, dtype=torch.long)
    assert not torch.allclose(model._hyper(x, zeros), model._hyper(x, ones))
    routed = model(batch)
    model.config = replace(model.config, tower_batch="masked")
    model.train()
    for m in model.modules():  # masked forward with eval-mode statistics: the same scores as routing
        if isinstance(m, nn.BatchNorm1d | nn.Dropout):
            m.eval()
    assert torch.allclose(model(batch), routed, atol=1e-5)
    assert hamur(hyper_domain=True, adapter_layers=0).hyper_domain_embedding is None


def test_sampled_towers_with_the_whole_batch_as_sample_are_the_masked_towers(random_batch):
    """``tower_batch="sampled"`` weights a tower's own rows and a sample of the others so that its BatchNorms
    see the whole batch's statistics; with every row in the sample that is exactly the masked computation:
    the same logits, the same gradients and the same running statistics."""
    batch = random_batch(ML1M, ROWS, domain="random")
    models = {
        mode: hamur(seed=5, tower_batch=mode, stats_sample=ROWS).train() for mode in ("masked", "sampled")
    }
    models["sampled"].load_state_dict(models["masked"].state_dict())
    logits = {}
    for mode, model in models.items():
        logits[mode] = model(batch)
        F.binary_cross_entropy_with_logits(logits[mode], batch.label).backward()
    assert torch.allclose(logits["sampled"], logits["masked"], atol=1e-5)
    grads = {mode: dict(model.named_parameters()) for mode, model in models.items()}
    for name, p in grads["masked"].items():
        if p.grad is not None:
            assert torch.allclose(grads["sampled"][name].grad, p.grad, atol=1e-4, rtol=1e-3), name
    stats = {mode: model.towers[2].blocks["layer1"].norm for mode, model in models.items()}
    assert torch.allclose(stats["sampled"].running_mean, stats["masked"].running_mean, atol=1e-6)
    assert torch.allclose(stats["sampled"].running_var, stats["masked"].running_var, atol=1e-5)


def test_sampled_towers_estimate_the_batch_statistics_at_near_routed_cost(random_batch):
    """A 256-row sample: the first block's batch mean is close to the whole batch's (not the domain's), and the
    towers' training FLOPs grow by the sample, not by the number of domains."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = random_batch(ML1M, ROWS, domain="random")
    # the domain is the third feature's id, so a domain's rows differ from the batch's in what the tower sees
    batch = replace(batch, domain=batch.sparse[:, 2] % ML1M.num_domains)
    model = hamur(seed=1, tower_batch="sampled", stats_sample=256).train()
    x = model.embed(batch).detach()
    z = model.towers[1].blocks["layer1"].linear(x).detach()
    model(batch)
    running = model.towers[1].blocks["layer1"].norm.running_mean / 0.1  # one step from 0, momentum 0.1
    whole, own = z.mean(dim=0), z[batch.domain == 1].mean(dim=0)
    assert (running - whole).norm() < 0.5 * (own - whole).norm()

    def train_flops(m) -> int:
        with FlopCounterMode(display=False) as counter:
            m(batch)
        return counter.get_total_flops()

    flops = {mode: train_flops(hamur(tower_batch=mode).train()) for mode in ("routed", "masked", "sampled")}
    assert flops["routed"] < flops["sampled"] < 1.5 * flops["routed"] < flops["masked"]


def test_a_tower_without_rows_in_the_batch_updates_its_statistics_as_the_masked_one_does(random_batch):
    """No row of domain 2 in the batch: the masked towers still run tower 2 on every row (its running statistics
    move, no loss reads it); sampled towers run it on the sample alone, which here is the whole batch."""
    batch = random_batch(ML1M, ROWS, domain="random")
    batch = replace(batch, domain=batch.domain % 2)  # domains 0 and 1 only
    models = {
        mode: hamur(seed=2, tower_batch=mode, stats_sample=ROWS).train() for mode in ("masked", "sampled")
    }
    models["sampled"].load_state_dict(models["masked"].state_dict())
    for model in models.values():
        model(batch)
    norms = {mode: model.towers[2].blocks["layer2"].norm for mode, model in models.items()}
    assert norms["masked"].num_batches_tracked == norms["sampled"].num_batches_tracked == 1
    assert torch.allclose(norms["sampled"].running_mean, norms["masked"].running_mean, atol=1e-6)
    assert torch.allclose(norms["sampled"].running_var, norms["masked"].running_var, atol=1e-5)
