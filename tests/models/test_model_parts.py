"""Model-specific behaviour: routing, one-row BatchNorm, HAMUR adapter options, STAR partitioned norm,
PLE depth, and the two Adaptive² miner modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.tensors import Batch, TensorData
from mdctr.domains.miner import DomainMiner, MinerConfig
from mdctr.models import build_model
from mdctr.models.base import BatchNorm1d, ModelInputs, recalibrate_batchnorm, route
from mdctr.training import TrainConfig
from mdctr.training.trainer import fit

INPUTS = ModelInputs((11, 7, 5), 2, 3)


class Recorder(nn.Module):
    """Expert that records the rows it saw and tags its output with its own id."""

    def __init__(self, ident: int):
        super().__init__()
        self.ident = ident
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.full((x.shape[0], 1), float(self.ident)) + x[:, :1]


def test_route_sends_each_row_only_to_its_own_expert():
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1) * 100  # row i holds 100·i
    domain = torch.tensor([2, 0, 2, 2, 0, 2, 0, 2, 2, 0])  # domain 1 absent
    experts = [Recorder(d) for d in range(3)]
    out = route(x, domain, experts, 1)
    assert [len(e.seen) for e in experts] == [1, 0, 1]  # an absent domain's expert never runs
    for d in (0, 2):
        assert sorted(experts[d].seen[0][:, 0].tolist()) == sorted(x[domain == d, 0].tolist())
    assert torch.equal(out[:, 0], x[:, 0] + domain.float())  # scattered back to the original rows


def test_batchnorm_one_row_in_training_uses_running_stats_without_updating_them():
    bn = BatchNorm1d(3)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    out = bn.train()(torch.full((1, 3), 5.0))
    assert torch.allclose(out, torch.full((1, 3), 2.0), atol=1e-4)  # (5 − 1)/√4
    assert torch.equal(bn.running_mean, torch.ones(3))
    bn(torch.randn(8, 3))  # two or more rows: ordinary BatchNorm, statistics move
    assert not torch.equal(bn.running_mean, torch.ones(3))


@pytest.mark.parametrize("per_domain", [True, False])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("layers", [1, 2])
def test_hamur_adapter_options(per_domain, norm, layers, random_batch):
    torch.manual_seed(0)
    cfg = {"adapter_per_domain": per_domain, "adapter_norm": norm, "adapter_layers": layers}
    model = build_model("hamur", INPUTS, config=cfg)
    assert len(model.adapters) == (INPUTS.num_domains if per_domain else 1)
    assert all(len(a) == layers for a in model.adapters)
    batch = random_batch(INPUTS, 30)
    loss = F.binary_cross_entropy_with_logits(model.train()(batch), batch.label)
    loss.backward()
    dead = [n for n, p in model.adapters.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []
    model.eval()
    full = model(batch)
    alone = model(Batch(batch.sparse[:1], batch.dense[:1], batch.domain[:1], batch.label[:1]))
    # eval output of a row never depends on the rest of the batch (running statistics for "batch")
    assert torch.allclose(alone, full[:1], atol=1e-5)


@pytest.mark.parametrize("init", ["ones", "scaled"])
def test_hamur_trains(init, random_batch):
    """A few Adam steps fit a domain-dependent rule; with the authors' ones initialisation too."""
    torch.manual_seed(0)
    model = build_model("hamur", INPUTS, width=0.25, config={"adapter_init": init})
    batch = random_batch(INPUTS, 256, seed=1)
    label = ((batch.sparse[:, 0] % 2 == 0) ^ (batch.domain == 1)).float()
    batch = Batch(batch.sparse, batch.dense, batch.domain, label)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = F.binary_cross_entropy_with_logits(model.train()(batch), batch.label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_star_partitioned_norm_uses_each_domains_statistics():
    torch.manual_seed(0)
    model = build_model("star", INPUTS)
    pn = model.tower.pn
    domain = torch.tensor([0] * 20 + [2] * 20)
    x = torch.cat([torch.randn(20, INPUTS.input_dim) + 5.0, torch.randn(20, INPUTS.input_dim) - 5.0])
    out = pn.train()(x, domain)
    # each domain is centred with its own batch statistics
    assert out[:20].mean().abs() < 1e-4 and out[20:].mean().abs() < 1e-4
    # running statistics are per domain: domain 0 moved up, domain 2 down, domain 1 (absent) untouched
    assert pn.stats[0].running_mean.mean() > 0.3
    assert pn.stats[2].running_mean.mean() < -0.3
    assert torch.equal(pn.stats[1].running_mean, torch.zeros(INPUTS.input_dim))
    # domain-specific affine parameters are applied only to their own rows
    with torch.no_grad():
        pn.beta_d[2].fill_(7.0)
    out = pn.eval()(x, domain)
    shifted = pn(x, torch.zeros_like(domain))
    assert torch.allclose(out[:20], shifted[:20])
    assert not torch.allclose(out[20:], shifted[20:])


def test_ple_defaults_to_two_levels_that_carry_the_shared_branch(random_batch):
    torch.manual_seed(0)
    model = build_model("ple", INPUTS)
    assert model.config.num_levels >= 2 and len(model.levels) == model.config.num_levels  # PLE, not CGC
    assert model.levels[0].shared_gate is not None and model.levels[-1].shared_gate is None
    batch = random_batch(INPUTS, 30)
    F.binary_cross_entropy_with_logits(model.train()(batch), batch.label).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []  # the level-1 shared gate trains only if level 2 reads the shared branch
    # level 1's shared gate feeds level 2's shared experts: changing it moves every row's output
    model.eval()
    before = model(batch)
    with torch.no_grad():
        model.levels[0].shared_gate.bias.add_(torch.arange(3.0) * 2)
    assert not torch.isclose(model(batch), before).any()


def test_ple_second_level_routes_specific_experts_by_domain(random_batch):
    """Level 2's specific experts of domain 1 change the outputs of domain-1 rows and of no other row."""
    torch.manual_seed(0)
    model = build_model("ple", INPUTS).eval()
    batch = random_batch(INPUTS, 30)
    before = model(batch)
    with torch.no_grad():
        for p in model.levels[1].specific[1].parameters():
            p.mul_(1.5)
    changed = ~torch.isclose(model(batch), before)
    assert changed[batch.domain == 1].all() and not changed[batch.domain != 1].any()


def _pepnet_with_hook(module_name: str):
    torch.manual_seed(0)
    model = build_model("pepnet", INPUTS).train()
    seen = {}
    module = dict(model.named_modules())[module_name]
    module.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0], out=out))
    return model, seen


def test_pepnet_epnet_gate_sees_the_domain_and_a_stop_gradient_embedding(random_batch):
    model, seen = _pepnet_with_hook("epnet")
    batch = random_batch(INPUTS, 30)
    model(batch)
    x = model.embed(batch)
    dom = model.domain_embedding(batch.domain)
    assert torch.equal(seen["inp"], torch.cat([dom, x], dim=1))
    seen["out"].sum().backward()  # the gate's output reaches the domain embedding, never the features
    assert model.domain_embedding.weight.grad.abs().sum() > 0
    assert model.embedding.table.weight.grad is None or model.embedding.table.weight.grad.abs().sum() == 0


def test_pepnet_ppnet_prior_is_user_item_ids_plus_domain(random_batch):
    model, seen = _pepnet_with_hook("ppnet.0")
    assert model.prior_features == (0, 1)  # user id, item id: the first two sparse features
    batch = random_batch(INPUTS, 30)
    model(batch)
    x = model.embed(batch)
    e = INPUTS.embed_dim
    ids = x[:, : 2 * e]
    dom = model.domain_embedding(batch.domain)
    assert torch.equal(seen["inp"][:, : 2 * e + dom.shape[1]], torch.cat([ids, dom], dim=1))
    seen["out"].sum().backward()
    # gradient reaches the user and item id rows (the prior), not the other features (stop-gradient part)
    grad = model.embedding.table.weight.grad
    starts = model.embedding.offsets.tolist()
    used = {int(batch.sparse[r, f]) + starts[f] for r in range(30) for f in range(3)}
    id_rows = {int(batch.sparse[r, f]) + starts[f] for r in range(30) for f in (0, 1)}
    nonzero = set(torch.nonzero(grad.abs().sum(1)).flatten().tolist())
    assert nonzero == id_rows and nonzero <= used
    with pytest.raises(ValueError, match="prior_features"):
        build_model("pepnet", INPUTS, config={"prior_features": (0, 3)})


def test_adaptive2_joint_aux_loss_only_in_training(random_batch):
    torch.manual_seed(0)
    model = build_model("adaptive2", INPUTS)
    batch = random_batch(INPUTS, 16)
    model.train()(batch)
    aux = model.aux_loss()
    assert aux is not None and aux.dim() == 0 and torch.isfinite(aux)
    model.eval()(batch)
    assert model.aux_loss() is None
    # hand-crafted ids are ignored: another batch.domain gives the same output
    other = Batch(batch.sparse, batch.dense, torch.zeros_like(batch.domain), batch.label)
    assert torch.equal(model(batch), model(other))


def test_adaptive2_pretrained_miner_is_frozen(random_batch):
    torch.manual_seed(0)
    model = build_model("adaptive2", INPUTS, config={"miner": "pretrained", "num_codes": 3})
    batch = random_batch(INPUTS, 16)
    with pytest.raises(RuntimeError, match="load_miner"):
        model(batch)
    miner = DomainMiner(INPUTS, MinerConfig(num_codes=3))
    with pytest.raises(ValueError, match="codes"):
        build_model("adaptive2", INPUTS, config={"miner": "pretrained"}).load_miner(miner)
    model.load_miner(miner)
    before = {k: v.clone() for k, v in miner.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = F.binary_cross_entropy_with_logits(model.train()(batch), batch.label)
    assert model.aux_loss() is None
    loss.backward()
    opt.step()
    assert not miner.training
    assert all(torch.equal(before[k], v) for k, v in miner.state_dict().items())
    assert torch.equal(model.last_codes, miner(batch))
    assert model.dense_parameters() < sum(p.numel() for p in model.parameters())


STAR_BACKBONE = {"backbone": "star", "num_codes": 3}


def _star_adaptive2(random_batch):
    torch.manual_seed(0)
    model = build_model("adaptive2", INPUTS, config=STAR_BACKBONE)
    batch = random_batch(INPUTS, 30)
    with torch.no_grad():  # one codebook vector on each of the first 3 rows: every code is in use
        z = model.vqvae.encode(model.embed(batch))
        model.vqvae._set_codebook(z[:3].clone())
    return model, batch


def test_adaptive2_star_backbone_trains_every_part(random_batch):
    model, batch = _star_adaptive2(random_batch)
    assert not hasattr(model, "specific") and not hasattr(model, "head")
    logits = model.train()(batch)
    assert logits.shape == (30,) and torch.isfinite(logits).all()
    assert set(model.last_codes.tolist()) == {0, 1, 2}
    (F.binary_cross_entropy_with_logits(logits, batch.label) + model.aux_loss()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_adaptive2_star_backbone_routes_rows_by_their_code(random_batch):
    """Code k's specific weights change the logits of code-k rows and of no other row."""
    model, batch = _star_adaptive2(random_batch)
    model.eval()
    before = model(batch)
    codes = model.last_codes
    with torch.no_grad():
        model.tower.fcn.domain_w[0][1].mul_(3.0)
        model.tower.pn.beta_d[1].add_(0.5)
    after = model(batch)
    assert torch.equal(model.last_codes, codes)
    changed = ~torch.isclose(before, after)
    assert changed[codes == 1].all() and not changed[codes != 1].any()


def test_adaptive2_star_backbone_rejects_gated_fusion():
    with pytest.raises(ValueError, match="fusion applies to backbone='mlp'"):
        build_model("adaptive2", INPUTS, config={"backbone": "star", "fusion": "gate"})
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model("adaptive2", INPUTS, config={"backbone": "moe"})


def test_recalibrate_batchnorm_sets_running_stats_to_the_batch_average(random_batch):
    torch.manual_seed(0)
    model = build_model("dnn", ModelInputs((11, 7, 5), 2, 1))
    b = random_batch(model.inputs, 96)
    # dense values far from N(0, 1): the running statistics must move well away from their init
    data = TensorData(b.sparse, b.dense * 3 + 5, b.domain, b.label, handcrafted=b.domain.clone())
    first_bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    momentum = first_bn.momentum
    recalibrate_batchnorm(model, data, rows=64, batch_size=32)  # two batches of 32; rows 64..95 unused
    x = first_bn_input(model, data)
    halves = [x[:32], x[32:64]]
    assert torch.allclose(first_bn.running_mean, torch.stack([h.mean(0) for h in halves]).mean(0), atol=1e-5)
    var = torch.stack([h.var(0, unbiased=True) for h in halves]).mean(0)
    assert torch.allclose(first_bn.running_var, var, atol=1e-4)
    assert first_bn.momentum == momentum and not first_bn.training and not model.training


def first_bn_input(model, data):
    """The input of the dnn's first BatchNorm for the first 64 rows (its first Linear's output)."""
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        return first_linear(model.embed(data.batch(0, 64)))


def test_recalibrate_batchnorm_leaves_frozen_and_unvisited_norms(random_batch):
    torch.manual_seed(0)
    model = build_model(
        "adaptive2", INPUTS, config={"miner": "pretrained", "num_codes": 3, "backbone": "star"}
    )
    miner = DomainMiner(INPUTS, MinerConfig(num_codes=3))
    model.load_miner(miner)
    data = _tensor_data(random_batch, 64)
    miner_stats = {k: v.clone() for k, v in miner.state_dict().items()}
    codes = miner(data.batch(0, 64))
    unused = [k for k in range(3) if k not in set(codes.tolist())]
    pn_before = {k: model.tower.pn.stats[k].running_mean.clone() for k in range(3)}
    recalibrate_batchnorm(model, data, rows=64, batch_size=64, frozen=model.miner)
    assert all(torch.equal(miner_stats[k], v) for k, v in miner.state_dict().items())
    for k in range(3):
        moved = not torch.equal(pn_before[k], model.tower.pn.stats[k].running_mean)
        assert moved == (k not in unused)


def _tensor_data(random_batch, rows: int) -> TensorData:
    b = random_batch(INPUTS, rows)
    return TensorData(b.sparse, b.dense, b.domain, b.label, b.domain.clone())


def test_adaptive2_recalibrates_after_each_epoch(monkeypatch, random_batch):
    calls = []
    monkeypatch.setattr(
        "mdctr.models.adaptive2.recalibrate_batchnorm", lambda model, data, rows, **kw: calls.append(rows)
    )
    torch.manual_seed(0)
    data = _tensor_data(random_batch, 64)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", patience=5)
    fit(build_model("adaptive2", INPUTS, config={"recalibrate_rows": 40}), data, data, config)
    assert calls == [40, 40]
    calls.clear()
    fit(build_model("adaptive2", INPUTS), data, data, config)
    assert calls == []
