"""Small prepared synthetic data for trainer tests (a few thousand rows: each fit takes well under a second)."""

from __future__ import annotations

import pytest

from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.data.synthetic import generate


@pytest.fixture(scope="session")
def small_prepared() -> PreparedData:
    loaded = generate(rows=3000, num_sparse=3, num_dense=2, vocab_size=40, num_domains=3, seed=1)
    return prepare_in_memory(loaded)
