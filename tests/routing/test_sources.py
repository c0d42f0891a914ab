from __future__ import annotations

import dataclasses

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


def test_random_source_is_a_stable_hash_of_the_user_into_buckets(small_prepared: PreparedData) -> None:
    routed = DomainRouting.for_model("star", "random", model_overrides=None).route(small_prepared)
    control = routed.control
    assert control is not None and control.source == "random" and routed.num_domains == 4
    col = small_prepared.spec.schema.sparse.index(control.column)
    for split in ("train", "valid", "test"):
        data = getattr(routed.data, split)
        user = getattr(small_prepared, split).sparse[:, col]
        # the same user always lands in the same bucket, whatever the split
        assert torch.equal(data.domain, (user * 2654435761) % 2**32 % 4)
    assert torch.bincount(routed.data.train.domain, minlength=4).min() > 0  # every bucket is used
    # refitting gives the same assignment (no state beyond the bucket count)
    again = DomainRouting.for_source("random").route(small_prepared)
    assert torch.equal(again.data.test.domain, routed.data.test.domain)


def test_binned_source_uses_train_quantiles_of_one_feature(small_prepared: PreparedData) -> None:
    schema = small_prepared.spec.schema
    routing = DomainRouting.for_model("mmoe", "binned", model_overrides=None)
    routed = routing.route(small_prepared)
    control = routed.control
    assert control is not None and control.column == schema.dense[0] and routed.num_domains == 4
    values = small_prepared.train.dense[:, 0].double()
    expected = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert torch.allclose(torch.tensor(control.edges, dtype=torch.float64), expected)
    sizes = torch.bincount(routed.data.train.domain, minlength=4)
    assert sizes.min() >= len(values) // 4 - 1  # quantile bins hold a quarter of the train rows each
    # validation rows are binned with the train edges, not refitted
    valid = small_prepared.valid.dense[:, 0].double()
    assert torch.equal(routed.data.valid.domain, torch.bucketize(valid, expected, right=True))
    # another feature and bucket count, and a feature the data do not have fails clearly
    two = DomainRouting.for_model("mmoe", "binned", buckets=2, bin_feature=schema.dense[1])
    assert two.route(small_prepared).control.column == schema.dense[1]  # type: ignore[union-attr]
    with pytest.raises(DomainSourceError, match="no feature 'no_such_column' to bin"):
        DomainRouting.for_model("mmoe", "binned", bin_feature="no_such_column").route(small_prepared)


def test_binned_by_a_sparse_feature_bins_ids_by_their_train_frequency(small_prepared: PreparedData) -> None:
    """Data without dense features (Epinions) bin users by activity: rows of frequent ids share a bin."""
    schema = small_prepared.spec.schema
    column = schema.sparse[0]
    routed = DomainRouting.for_model("mmoe", "binned", bin_feature=column).route(small_prepared)
    control = routed.control
    assert control is not None and control.column == column and control.counts
    ids = small_prepared.train.sparse[:, 0].long()
    counts = torch.bincount(ids)
    assert list(control.counts) == counts.tolist()
    per_row = counts[ids].double()
    edges = torch.unique(torch.quantile(per_row, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)))
    assert torch.equal(routed.data.train.domain, torch.bucketize(per_row, edges, right=True))
    assert routed.num_domains == len(edges) + 1 >= 2
    # an id never seen in train counts 0 and falls in the lowest bin; the state survives its JSON round trip
    unseen = dataclasses.replace(small_prepared.test, sparse=small_prepared.test.sparse.clone())
    unseen.sparse[:, 0] = len(counts) + 5
    assert int(control.assign(unseen, schema).max()) == 0
    again = type(control).from_dict(control.to_dict())
    assert torch.equal(again.assign(small_prepared.test, schema), control.assign(small_prepared.test, schema))


@pytest.mark.parametrize("source", ["random", "binned"])
def test_every_multi_domain_model_trains_with_the_control_sources(
    source: str, small_prepared: PreparedData
) -> None:
    from mdctr.models import model_class, model_names
    from mdctr.training import TrainConfig, train_model

    multi = [n for n in model_names() if len(model_class(n).domain_sources) > 1]
    assert len(multi) >= 5
    for name in multi:
        t = train_model(
            small_prepared,
            name,
            source,
            width=0.25,
            config=TrainConfig(epochs=1, batch_size=512, device="cpu"),
        )
        assert t.control is not None and t.control.source == source and t.inputs.num_domains == 4
        # the model routes by the control domain: moving every row to another domain changes its output
        routed = t.routing.route(small_prepared).data.test  # type: ignore[union-attr]
        batch = routed.batch(0, 256)
        moved = dataclasses.replace(batch, domain=(batch.domain + 1) % 4)
        t.model.eval()
        with torch.no_grad():
            assert not torch.allclose(t.model(batch), t.model(moved)), name
