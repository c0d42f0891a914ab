"""A generated multi-domain CTR dataset with *planted* latent domains (needs no files).

Every row belongs to one of K planted domains (unequal sizes). The planted domain is

* **recoverable from the inputs**: for each sparse feature, domain k draws its ids from its own block of the
  vocabulary (probability ``OWN_BLOCK_PROB``; otherwise uniformly from the whole vocabulary, which gives the
  domains a shared region), and every dense feature is normal with a domain-specific mean;
* **relevant to the label**: the click logit mixes shared per-id effects with domain-specific per-id effects,
  domain-specific dense slopes (signs differ between domains) and a pairwise ``f0 × f1`` interaction whose sign
  flips by domain, so one shared function fits the domains worse than domain-aware ones.

``conflict`` > 0 adds the planted-conflict structure (issue #23's benchmark): the last sparse column is then drawn
uniformly, whatever the domain (it says nothing about the domain), and its per-id effect, scaled by ``conflict``,
has the *opposite sign* in odd domains. One shared function must learn that sign from the other columns; a model
routed by the right domains gets it for free, a model routed by the wrong ones (or by none) averages it away.

The schema's hand-crafted domain column is a noisy view of the planted domain: with probability
``handcrafted_noise`` a row's hand-crafted id is drawn uniformly at random, so mined domains can beat it.
The planted id itself is returned in ``extras["planted_domain"]`` (np.int64, [rows]) and is not a column.

Everything is vectorised numpy; the structure (blocks, means, weights) depends only on ``seed`` and the
sizes, not on ``rows``, so a small and a large draw with the same seed share the same label function.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdctr.config import ConfigError, from_dict
from mdctr.data.base import DatasetAdapter, LoadedDataset, register_dataset
from mdctr.schema import FeatureSchema

log = logging.getLogger(__name__)

#: probability that a sparse id comes from its planted domain's own vocabulary block
OWN_BLOCK_PROB = 0.9
#: rank of the latent vectors of the f0 × f1 interaction
INTERACTION_RANK = 4
#: how far apart (in standard deviations) the domain means of a dense feature are drawn
DENSE_SHIFT_STD = 2.0

#: entropy that keys the conflict effects' structure stream (any constant other than a sample seed's pair)
CONFLICT_STREAM = 0x5EC0FF

LABEL = "label"
DOMAIN = "domain"


@dataclass(frozen=True)
class SyntheticConfig:
    """Options of the synthetic dataset (see :func:`generate`)."""

    rows: int = 20000
    num_sparse: int = 4
    num_dense: int = 2
    vocab_size: int = 100
    num_domains: int = 4
    seed: int = 0
    handcrafted_noise: float = 0.3
    conflict: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            (self.rows >= 1, "rows must be >= 1"),
            (self.num_sparse >= 1, "num_sparse must be >= 1"),
            (self.num_dense >= 0, "num_dense must be >= 0"),
            (self.num_domains >= 1, "num_domains must be >= 1"),
            (self.vocab_size >= self.num_domains, "vocab_size must be >= num_domains (one block per domain)"),
            (0.0 <= self.handcrafted_noise <= 1.0, "handcrafted_noise must be in [0, 1]"),
            (self.conflict >= 0.0, "conflict must be >= 0"),
            (self.conflict == 0.0 or self.num_sparse >= 2, "conflict needs num_sparse >= 2"),
        )
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"synthetic: {msg}; got {self}")


def synthetic_schema(num_sparse: int, num_dense: int, num_domains: int) -> FeatureSchema:
    """Schema of a synthetic table: sparse ``f0..``, dense ``x0..``, ``label``, ``domain`` (no time)."""
    return FeatureSchema(
        name="synthetic",
        sparse=tuple(f"f{j}" for j in range(num_sparse)),
        dense=tuple(f"x{d}" for d in range(num_dense)),
        label=LABEL,
        domain=DOMAIN,
        domain_names=tuple(f"d{k}" for k in range(num_domains)),
    )


def generate(
    rows: int = 20000,
    num_sparse: int = 4,
    num_dense: int = 2,
    vocab_size: int = 100,
    num_domains: int = 4,
    seed: int = 0,
    handcrafted_noise: float = 0.3,
    conflict: float = 0.0,
    *,
    sample_seed: int | None = None,
) -> LoadedDataset:
    """Draw a synthetic multi-domain table.

    Args:
        rows: number of rows N.
        num_sparse: sparse columns ``f0..``, int64 ids in ``[0, vocab_size)``.
        num_dense: dense columns ``x0..``, float32.
        vocab_size: ids per sparse column (split into ``num_domains`` blocks).
        num_domains: number K of planted (and hand-crafted) domains.
        seed: seeds structure and sampling; same arguments → identical output.
        handcrafted_noise: probability that a row's hand-crafted domain id is uniform random.
        conflict: weight of the sign-reversed effect of the last sparse column (0: none, the data drawn before
            the option existed, bit for bit).
        sample_seed: when given, seeds the rows alone, the structure (domains, effects: what a model learns)
            staying ``seed``'s: chunks of one large dataset, or its valid/test splits, drawn separately.

    Returns:
        LoadedDataset with ``extras["planted_domain"]`` (np.int64 [N]) and ``extras["config"]`` (dict).
    """
    cfg = SyntheticConfig(
        rows, num_sparse, num_dense, vocab_size, num_domains, seed, handcrafted_noise, conflict
    )
    K, V, N = num_domains, vocab_size, rows
    # Two independent streams: the structure must not depend on N, the samples must.
    structure_seq, sample_seq = np.random.SeedSequence(seed).spawn(2)
    if sample_seed is not None:
        sample_seq = np.random.SeedSequence([seed, sample_seed])
    structure_rng, sample_rng = np.random.default_rng(structure_seq), np.random.default_rng(sample_seq)

    # --- structure ---------------------------------------------------------------------------------------
    domain_probs = structure_rng.dirichlet(np.full(K, 4.0))  # unequal but not tiny domains
    block = V // K
    # per feature, a permutation of blocks so domain k does not own the same id range in every feature
    block_of = np.stack([structure_rng.permutation(K) for _ in range(num_sparse)])  # [S, K]
    dense_mean = structure_rng.normal(0.0, DENSE_SHIFT_STD, size=(K, num_dense))  # [K, D]
    bias = structure_rng.normal(-0.2, 0.5, size=K)  # [K]
    shared_eff = structure_rng.normal(0.0, 1.0, size=(num_sparse, V))  # [S, V]
    domain_eff = structure_rng.normal(0.0, 1.0, size=(num_sparse, K, V))  # [S, K, V]
    dense_w = structure_rng.normal(0.0, 1.0, size=(K, num_dense))  # [K, D]
    inter_a = structure_rng.normal(0.0, 1.0 / math.sqrt(INTERACTION_RANK), size=(V, INTERACTION_RANK))
    inter_b = structure_rng.normal(0.0, 1.0 / math.sqrt(INTERACTION_RANK), size=(V, INTERACTION_RANK))
    inter_sign = np.where(np.arange(K) % 2 == 0, 1.0, -1.0)  # [K]: the interaction conflicts by domain

    # --- samples -----------------------------------------------------------------------------------------
    planted = sample_rng.choice(K, size=N, p=domain_probs).astype(np.int64)  # [N]
    cols: dict[str, np.ndarray] = {}
    sparse_ids = np.empty((num_sparse, N), dtype=np.int64)
    for j in range(num_sparse):
        own = block_of[j][planted] * block + sample_rng.integers(0, block, size=N)
        anywhere = sample_rng.integers(0, V, size=N)
        sparse_ids[j] = np.where(sample_rng.random(N) < OWN_BLOCK_PROB, own, anywhere)
        cols[f"f{j}"] = sparse_ids[j]
    if conflict:
        # the conflict column says nothing about the domain: uniform ids; its effects come from their own
        # structure stream, so that conflict=0 leaves every draw as it was before the option existed
        conflict_eff = np.random.default_rng(np.random.SeedSequence([seed, CONFLICT_STREAM])).normal(size=V)
        sparse_ids[-1] = cols[f"f{num_sparse - 1}"] = sample_rng.integers(0, V, size=N)
    dense = dense_mean[planted] + sample_rng.standard_normal((N, num_dense))  # [N, D]
    for d in range(num_dense):
        cols[f"x{d}"] = dense[:, d].astype(np.float32)

    # --- label -------------------------------------------------------------------------------------------
    logit = bias[planted].copy()
    sparse_scale = 1.0 / math.sqrt(num_sparse)
    for j in range(num_sparse):
        ids = sparse_ids[j]
        logit += sparse_scale * (0.5 * shared_eff[j, ids] + 0.8 * domain_eff[j, planted, ids])
    if num_dense:
        # slopes around each domain's own mean: the mean shift identifies the domain, the slope is the conflict
        dense_scale = 0.8 / math.sqrt(num_dense)
        for d in range(num_dense):
            logit += dense_scale * (dense[:, d] - dense_mean[planted, d]) * dense_w[planted, d]
    if num_sparse >= 2:
        # rank-by-rank 1-D gathers: an einsum over gathered [N, R] rows is several times slower at 10M rows
        pair = np.zeros(N)
        for r in range(INTERACTION_RANK):
            pair += inter_a[:, r][sparse_ids[0]] * inter_b[:, r][sparse_ids[1]]
        logit += 0.8 * inter_sign[planted] * pair
    if conflict:
        logit += conflict * inter_sign[planted] * conflict_eff[sparse_ids[-1]]
    label = (sample_rng.random(N) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)

    noisy = sample_rng.random(N) < handcrafted_noise
    handcrafted = np.where(noisy, sample_rng.integers(0, K, size=N), planted).astype(np.int64)

    schema = synthetic_schema(num_sparse, num_dense, num_domains)
    cols[LABEL] = label
    cols[DOMAIN] = handcrafted
    table = pd.DataFrame({c: cols[c] for c in schema.columns}, copy=False)
    log.debug("synthetic: %d rows, %d domains, positive rate %.3f", N, K, float(label.mean()))
    return LoadedDataset(
        table=table, schema=schema, extras={"planted_domain": planted, "config": asdict(cfg)}
    )


@register_dataset("synthetic")
class Synthetic(DatasetAdapter):
    """Registered form of :func:`generate`; constructor options are :class:`SyntheticConfig` fields."""

    needs_source = False

    def __init__(self, **options: Any) -> None:
        # fail on a misspelt option now (naming it), not when the data is generated
        self.config = from_dict(SyntheticConfig, options, where="dataset 'synthetic' options")
        super().__init__(**options)

    def load(self, source: Path) -> LoadedDataset:
        return generate(**asdict(self.config))
