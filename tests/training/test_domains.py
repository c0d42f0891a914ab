from __future__ import annotations

import pytest
import torch

from mdctr.data.prepare import PreparedData
from mdctr.training.domains import DomainSourceError, apply_domain_source


def test_sources_fill_the_routing_domain(small_prepared: PreparedData) -> None:
    hand, n = apply_domain_source(small_prepared, "handcrafted")
    assert n == 3 and torch.equal(hand.test.domain, small_prepared.test.handcrafted)
    none, n = apply_domain_source(small_prepared, "none", model_name="dnn")
    assert n == 1 and int(none.train.domain.abs().sum()) == 0
    assert torch.equal(none.train.handcrafted, small_prepared.train.handcrafted)


def test_mined_source_uses_the_miner(small_prepared: PreparedData) -> None:
    class ParityMiner:
        num_codes = 2

        def assign(self, data):  # type: ignore[no-untyped-def]
            return data.sparse[:, 0] % 2

    mined, n = apply_domain_source(small_prepared, "mined", ParityMiner())
    assert n == 2 and torch.equal(mined.valid.domain, small_prepared.valid.sparse[:, 0] % 2)
    with pytest.raises(DomainSourceError, match="needs a fitted miner"):
        apply_domain_source(small_prepared, "mined")


def test_a_source_the_model_rejects_fails_clearly(small_prepared: PreparedData) -> None:
    with pytest.raises(DomainSourceError, match=r"model 'dnn' does not accept domain source 'handcrafted'"):
        apply_domain_source(small_prepared, "handcrafted", model_name="dnn")
    with pytest.raises(DomainSourceError, match="unknown domain source"):
        apply_domain_source(small_prepared, "sometimes")
