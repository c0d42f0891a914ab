"""The shared random-batch builder keeps the promises the model tests rely on."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mdctr.models.base import ModelInputs

INPUTS = ModelInputs((11, 7, 5), 2, 3)


def test_shapes_ranges_and_seed(random_batch: Any) -> None:
    batch = random_batch(INPUTS, 40, seed=4)
    assert batch.sparse.shape == (40, 3) and batch.dense.shape == (40, 2) and len(batch) == 40
    for j, vocab in enumerate(INPUTS.vocab_sizes):
        assert int(batch.sparse[:, j].min()) >= 0 and int(batch.sparse[:, j].max()) < vocab
    assert set(batch.label.tolist()) == {0.0, 1.0}
    assert batch.domain.tolist() == [i % 3 for i in range(40)]
    again, other = random_batch(INPUTS, 40, seed=4), random_batch(INPUTS, 40, seed=5)
    assert torch.equal(batch.sparse, again.sparse) and torch.equal(batch.dense, again.dense)
    assert not torch.equal(batch.sparse, other.sparse)


def test_domain_modes_change_only_the_domain(random_batch: Any) -> None:
    """Tests put the same rows in each domain in turn: only ``domain`` may differ between the calls."""
    base = random_batch(INPUTS, 300, seed=2)
    shuffled = random_batch(INPUTS, 300, domain="random", seed=2)
    for batch in (shuffled, random_batch(INPUTS, 300, domain=1, seed=2)):
        assert torch.equal(batch.sparse, base.sparse) and torch.equal(batch.dense, base.dense)
        assert torch.equal(batch.label, base.label)
    assert shuffled.domain[:3].tolist() == [0, 1, 2]  # every domain present
    assert shuffled.domain.tolist() != base.domain.tolist()
    assert 70 < int((shuffled.domain == 2).sum()) < 130  # uniform: 100 expected
    assert random_batch(INPUTS, 300, domain=1).domain.unique().tolist() == [1]
    assert shuffled.domain.dtype == torch.int64


def test_bad_domains_are_named(random_batch: Any) -> None:
    with pytest.raises(ValueError, match=r"domain 3 at row 1; expected 0\.\.2"):
        random_batch(INPUTS, 2, domain=[0, 3])
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(2,\)"):
        random_batch(INPUTS, 2, domain=[0, 1, 2])
    with pytest.raises(ValueError, match="'cycle'"):
        random_batch(INPUTS, 2, domain="cycle")
