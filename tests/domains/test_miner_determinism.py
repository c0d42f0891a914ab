"""The default domain miner is deterministic for a seed at real size: refitting it on the same ML-1M rows gives
the same codes and the same codebook, bit for bit; another seed gives another codebook. On one torch thread (the
session's setting): the thread count changes the order of float reductions, so it is part of "the same run".

(``mined-joint`` codes of a repeated training run: ``tests/routing/test_joint.py``,
``test_training_is_deterministic_for_a_seed``, 50,000 planted-conflict rows.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.domains import DomainMiner, MinerConfig, fit_miner
from mdctr.routing import model_inputs

#: ≥ 50k rows: enough batches (default batch 1024, 3 epochs) for dead-code restarts and the EMA to act
ROWS = 60_000


@pytest.fixture(scope="module")
def ml1m(datasets_dir: Path) -> PreparedData:
    return prepare_in_memory(load_dataset("ml-1m", datasets_dir), seed=0)


def _fit(prepared: PreparedData, seed: int) -> DomainMiner:
    # the default configuration, only the seed set; the caller's global RNG state must not matter
    torch.manual_seed(12345 + seed)
    torch.rand(1000)
    return fit_miner(prepared.train.head(ROWS), model_inputs(prepared, 1), MinerConfig(seed=seed))


@pytest.fixture(scope="module")
def fits(ml1m: PreparedData) -> tuple[DomainMiner, DomainMiner, DomainMiner]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set it here too (the one-thread fixture is session-wide)
    try:
        return _fit(ml1m, 0), _fit(ml1m, 0), _fit(ml1m, 1)
    finally:
        torch.set_num_threads(threads)


def test_refit_with_the_same_seed_gives_identical_codes_and_codebook(ml1m, fits) -> None:
    a, b, _ = fits
    assert MinerConfig() == MinerConfig(seed=0) and a.config == MinerConfig()
    for split in (ml1m.train.head(ROWS), ml1m.valid):
        codes = a.assign(split)
        assert torch.equal(codes, b.assign(split))
        # every code is in use on the rows it was fitted on: identical codes are not a collapsed constant
        assert torch.unique(codes).numel() == a.num_codes
    assert torch.equal(a.vqvae.codebook, b.vqvae.codebook)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    differing = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert differing == []  # every weight and buffer (EMA sums, usage, BatchNorm statistics) is identical


def test_another_seed_gives_another_codebook(ml1m, fits) -> None:
    a, _, c = fits
    assert c.config.seed == 1
    assert a.vqvae.codebook.shape == c.vqvae.codebook.shape
    assert not torch.allclose(a.vqvae.codebook, c.vqvae.codebook)
    assert not torch.equal(a.assign(ml1m.valid), c.assign(ml1m.valid))
