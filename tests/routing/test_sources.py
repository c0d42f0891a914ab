from __future__ import annotations

import pytest
import torch

from mdctr.data.prepare import PreparedData
from mdctr.domains.miner import MinerConfig, fit_miner
from mdctr.routing import DomainRouting, DomainSourceError, count_batch, flops_per_sample, model_inputs


class ParityMiner(torch.nn.Module):
    """A stand-in external miner: code = parity of the first sparse id."""

    num_codes = 2

    def forward(self, batch):  # type: ignore[no-untyped-def]
        return batch.sparse[:, 0] % 2

    def assign(self, data):  # type: ignore[no-untyped-def]
        return data.sparse[:, 0] % 2


def test_sources_fill_the_routing_domain(small_prepared: PreparedData) -> None:
    hand = DomainRouting.for_source("handcrafted").route(small_prepared)
    assert hand.num_domains == 3 and torch.equal(hand.data.test.domain, small_prepared.test.handcrafted)
    assert hand.inputs.num_domains == 3
    none = DomainRouting.for_model("dnn", "none").route(small_prepared)
    assert none.num_domains == 1 and int(none.data.train.domain.abs().sum()) == 0
    assert torch.equal(none.data.train.handcrafted, small_prepared.train.handcrafted)


def test_mined_source_uses_the_external_miner(small_prepared: PreparedData) -> None:
    routing = DomainRouting.for_model("star", "mined", miner=ParityMiner())
    mined = routing.route(small_prepared)
    assert mined.num_domains == 2
    assert torch.equal(mined.data.valid.domain, small_prepared.valid.sparse[:, 0] % 2)
    with pytest.raises(DomainSourceError, match="needs a fitted miner"):
        DomainRouting.for_model("star", "mined").route(small_prepared)


def test_a_source_the_model_rejects_fails_clearly() -> None:
    with pytest.raises(DomainSourceError, match=r"model 'dnn' does not accept domain source 'handcrafted'"):
        DomainRouting.for_model("dnn", "handcrafted")
    with pytest.raises(DomainSourceError, match="unknown domain source"):
        DomainRouting.for_source("sometimes")


def test_where_the_miner_sits_decides_cost_and_what_serving_keeps(small_prepared: PreparedData) -> None:
    """External miner: routes from outside, counted beside the model, saved for serving. Self-mining model:
    needs no miner. A model holding a pre-trained miner: attached inside, counted in its own forward."""
    miner = fit_miner(small_prepared.train, model_inputs(small_prepared, 1), MinerConfig(epochs=1))

    outside = DomainRouting.for_model("star", "mined", miner=miner)
    assert outside.needs_miner and outside.external_miner is miner
    routed = outside.route(small_prepared)
    model = outside.build(routed.inputs)
    batch = count_batch(routed.data.valid)
    assert outside.serving_miner(model) is miner
    assert outside.flops(model, batch) == flops_per_sample(model, batch, miner=miner)
    assert outside.flops(model, batch) > flops_per_sample(model, batch)  # the miner's forward is counted

    joint = DomainRouting.for_model("adaptive2", "mined", miner=miner)
    assert not joint.needs_miner and joint.miner is None  # its own VQ-VAE mines
    assert joint.route(small_prepared).num_domains == 1  # the routing column is unused
    joint_model = joint.build(joint.route(small_prepared).inputs)
    assert joint.serving_miner(joint_model) is None

    held = DomainRouting.for_model(
        "adaptive2", "mined", miner=miner, model_overrides={"miner": "pretrained", "num_codes": 4}
    )
    assert held.needs_miner and held.holds_miner and held.external_miner is None
    held_model = held.build(held.route(small_prepared).inputs)
    assert held_model.miner is miner and held.serving_miner(held_model) is None
    with pytest.raises(DomainSourceError, match="holds a pre-trained miner"):
        DomainRouting.for_model("adaptive2", "mined", model_overrides={"miner": "pretrained"}).build(
            routed.inputs
        )
