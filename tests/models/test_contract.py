"""Contract every registered model meets, for every routing source it accepts."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from mdctr.data.tensors import Batch
from mdctr.models import model_class, model_names
from mdctr.models.adaptive2 import Adaptive2
from mdctr.models.base import DOMAIN_SOURCES, ModelInputs, plan_pairs
from mdctr.routing import (
    JOINT_SOURCE,
    DomainSourceError,
    JointMined,
    JointMinerConfig,
    build_routed,
    check_domain_source,
)

VOCAB = (11, 7, 5)
NUM_DENSE = 2
NUM_DOMAINS = 3


def inputs_for(source: str) -> ModelInputs:
    """mined-joint: the inner model is built for the joint miner's m codes."""
    if source == JOINT_SOURCE:
        return ModelInputs(VOCAB, NUM_DENSE, JointMinerConfig().num_codes)
    return ModelInputs(VOCAB, NUM_DENSE, 1 if source == "none" else NUM_DOMAINS)


CASES = [(name, source) for name in model_names() for source in model_class(name).domain_sources]
BATCH = 24


def _build(name: str, source: str, seed: int = 0, width: float = 1.0):
    torch.manual_seed(seed)
    # the model as the source runs it: mined-joint wraps it with its joint miner (mdctr.routing.joint)
    return build_routed(name, source, inputs_for(source), width=width)


def shuffled_if_mined(source: str) -> str | None:
    """The domain mode of ``random_batch`` for ``source``: mined codes arrive as arbitrary ids in range
    (every code present), so shuffle them rather than cycling."""
    return "random" if source in ("mined", JOINT_SOURCE) else None


def _cover_all_codes(model, batch) -> None:
    """adaptive2 and the mined-joint wrapper pick their own codes: put one codebook vector on each of the first
    m rows' encodings."""
    if isinstance(model, Adaptive2 | JointMined) and model.vqvae is not None:
        with torch.no_grad():
            z = model.vqvae.encode(model.embed(batch))
            model.vqvae._set_codebook(z[: model.config.num_codes].clone())
        if isinstance(model, JointMined):
            model.codebook_initialised.fill_(True)  # keep these codes (no data init at the first batch)


#: what each model must accept, written out rather than read back from the classes: the single-domain
#: baseline routes nothing, the models that mine inside their forward take only mined codes, and every other
#: (multi-domain) model takes all six sources, the controls ``random`` and ``binned`` and the joint miner
#: ``mined-joint`` (a wrapper, for every model that accepts ``mined`` and does not mine by itself) included
ONLY_SOURCE = {"dnn": "none", "adaptive2": "mined", "adaptdhm": "mined"}
ALL_SOURCES = ("handcrafted", "mined", "none", "random", "binned", "mined-joint")


def test_every_model_accepts_a_known_source():
    """Each model accepts exactly the sources stated above; planning keeps those and the trainer refuses the
    rest (naming the model)."""
    assert set(DOMAIN_SOURCES) == set(ALL_SOURCES)
    multi = [n for n in model_names() if n not in ONLY_SOURCE]
    assert set(ONLY_SOURCE) <= set(model_names()) and len(multi) >= 10, multi
    for name in model_names():
        expected = (ONLY_SOURCE[name],) if name in ONLY_SOURCE else ALL_SOURCES
        assert set(model_class(name).domain_sources) == set(expected), name
        for source in ALL_SOURCES:
            if source in expected:
                check_domain_source(name, source)
            else:
                with pytest.raises(DomainSourceError, match=name):
                    check_domain_source(name, source)
    # planning a request for two routed sources: a multi-domain model runs both; a single-source model runs
    # its own source once and reports the requested ones it cannot take
    pairs, skipped = plan_pairs(["hamur", "dnn", "adaptive2"], ["handcrafted", "random"])
    assert pairs == [("hamur", "handcrafted"), ("hamur", "random"), ("dnn", "none"), ("adaptive2", "mined")]
    assert skipped == [
        ("dnn", "handcrafted"),
        ("dnn", "random"),
        ("adaptive2", "handcrafted"),
        ("adaptive2", "random"),
    ]
    with pytest.raises(ValueError, match="unknown domain source"):
        plan_pairs(["hamur"], ["handcrafted", "hashed"])


@pytest.mark.parametrize(("name", "source"), CASES)
def test_output_shape_and_finite(name, source, random_batch):
    model = _build(name, source)
    batch = random_batch(inputs_for(source), BATCH, domain=shuffled_if_mined(source))
    for train in (True, False):
        model.train(train)
        out = model(batch)
        assert out.shape == (BATCH,), (name, train)
        assert torch.isfinite(out).all(), (name, train)


@pytest.mark.parametrize(("name", "source"), CASES)
def test_gradient_reaches_every_parameter(name, source, random_batch):
    model = _build(name, source).train()
    batch = random_batch(inputs_for(source), 48, domain=shuffled_if_mined(source))
    _cover_all_codes(model, batch)
    logits = model(batch)
    loss = F.binary_cross_entropy_with_logits(logits, batch.label)
    aux = model.aux_loss()
    if aux is not None:
        loss = loss + aux
    loss.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
    ]
    assert not missing, f"{name}/{source}: no gradient for {missing}"


@pytest.mark.parametrize(("name", "source"), CASES)
def test_same_seed_same_output(name, source, random_batch):
    batch = random_batch(inputs_for(source), BATCH, domain=shuffled_if_mined(source))
    a = _build(name, source, seed=3).eval()(batch)
    b = _build(name, source, seed=3).eval()(batch)
    c = _build(name, source, seed=4).eval()(batch)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(("name", "source"), CASES)
def test_batch_with_absent_domains(name, source, random_batch):
    model = _build(name, source)
    batch = random_batch(inputs_for(source), BATCH, domain=0)  # only domain 0 present
    for train in (True, False):
        out = model.train(train)(batch)
        assert out.shape == (BATCH,)
        assert torch.isfinite(out).all()
    # a row's eval output does not depend on which other domains share its batch
    model.eval()
    full = random_batch(inputs_for(source), BATCH, domain=shuffled_if_mined(source))
    alone = model(make_row_subset(full, full.domain == full.domain[0]))
    assert torch.allclose(alone, model(full)[full.domain == full.domain[0]], atol=1e-5)


def make_row_subset(batch: Batch, mask: torch.Tensor) -> Batch:
    return Batch(batch.sparse[mask], batch.dense[mask], batch.domain[mask], batch.label[mask])


@pytest.mark.parametrize(("name", "source"), CASES)
def test_one_row_batch(name, source, random_batch):
    model = _build(name, source)
    batch = random_batch(inputs_for(source), 1, domain=inputs_for(source).num_domains - 1)
    out = model.eval()(batch)
    assert out.shape == (1,)
    assert torch.isfinite(out).all()
    out = model.train()(batch)  # one-row groups through BatchNorm must not crash
    assert out.shape == (1,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "source"), CASES)
def test_flops_grow_with_width(name, source, random_batch):
    batch = random_batch(inputs_for(source), BATCH, domain=shuffled_if_mined(source))
    flops = []
    for width in (0.5, 1.0, 2.0):
        model = _build(name, source, width=width).eval()
        with FlopCounterMode(display=False) as counter:
            model(batch)
        flops.append(counter.get_total_flops())
    assert flops[0] < flops[1] < flops[2], f"{name}: {flops}"
