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


@dataclass(frozen=True)
class _Structure:
    """What a model learns: drawn from ``seed`` and the sizes alone, never from the number of rows.

    K planted domains, S sparse columns of V ids, D dense columns, rank R of the f0 × f1 interaction.
    """

    domain_probs: np.ndarray  # [K] planted domain sizes
    block_of: np.ndarray  # [S, K] which vocabulary block domain k owns in feature j
    dense_mean: np.ndarray  # [K, D]
    bias: np.ndarray  # [K]
    shared_eff: np.ndarray  # [S, V]
    domain_eff: np.ndarray  # [S, K, V]
    dense_w: np.ndarray  # [K, D]
    inter_a: np.ndarray  # [V, R]
    inter_b: np.ndarray  # [V, R]
    inter_sign: np.ndarray  # [K]: +1 in even domains, -1 in odd ones
    conflict_eff: np.ndarray | None  # [V] the conflict column's per-id effect; None without conflict


def _draw_structure(cfg: SyntheticConfig, rng: np.random.Generator) -> _Structure:
    """The structure from its own stream ``rng`` (the conflict effects from theirs, keyed by ``seed``)."""
    K, V, S, D = cfg.num_domains, cfg.vocab_size, cfg.num_sparse, cfg.num_dense
    domain_probs = rng.dirichlet(np.full(K, 4.0))  # unequal but not tiny domains
    # per feature, a permutation of blocks so domain k does not own the same id range in every feature
    block_of = np.stack([rng.permutation(K) for _ in range(S)])
    dense_mean = rng.normal(0.0, DENSE_SHIFT_STD, size=(K, D))
    bias = rng.normal(-0.2, 0.5, size=K)
    shared_eff = rng.normal(0.0, 1.0, size=(S, V))
    domain_eff = rng.normal(0.0, 1.0, size=(S, K, V))
    dense_w = rng.normal(0.0, 1.0, size=(K, D))
    inter_a = rng.normal(0.0, 1.0 / math.sqrt(INTERACTION_RANK), size=(V, INTERACTION_RANK))
    inter_b = rng.normal(0.0, 1.0 / math.sqrt(INTERACTION_RANK), size=(V, INTERACTION_RANK))
    inter_sign = np.where(np.arange(K) % 2 == 0, 1.0, -1.0)  # the interaction conflicts by domain
    # the conflict effects come from their own structure stream, so that conflict=0 leaves every draw as it
    # was before the option existed
    conflict_eff = (
        np.random.default_rng(np.random.SeedSequence([cfg.seed, CONFLICT_STREAM])).normal(size=V)
        if cfg.conflict
        else None
    )
    return _Structure(
        domain_probs=domain_probs,
        block_of=block_of,
        dense_mean=dense_mean,
        bias=bias,
        shared_eff=shared_eff,
        domain_eff=domain_eff,
        dense_w=dense_w,
        inter_a=inter_a,
        inter_b=inter_b,
        inter_sign=inter_sign,
        conflict_eff=conflict_eff,
    )


def _draw_features(
    cfg: SyntheticConfig, st: _Structure, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(planted domain [N] int64, sparse ids [S, N] int64, dense values [N, D] float64) from the sample stream."""
    K, V, N = cfg.num_domains, cfg.vocab_size, cfg.rows
    block = V // K
    planted = rng.choice(K, size=N, p=st.domain_probs).astype(np.int64)
    sparse_ids = np.empty((cfg.num_sparse, N), dtype=np.int64)
    for j in range(cfg.num_sparse):
        own = st.block_of[j][planted] * block + rng.integers(0, block, size=N)
        anywhere = rng.integers(0, V, size=N)
        sparse_ids[j] = np.where(rng.random(N) < OWN_BLOCK_PROB, own, anywhere)
    if cfg.conflict:
        # the conflict column says nothing about the domain: uniform ids
        sparse_ids[-1] = rng.integers(0, V, size=N)
    dense = st.dense_mean[planted] + rng.standard_normal((N, cfg.num_dense))
    return planted, sparse_ids, dense


def _click_logit(
    cfg: SyntheticConfig, st: _Structure, planted: np.ndarray, sparse_ids: np.ndarray, dense: np.ndarray
) -> np.ndarray:
    """[N] click logit of every row: its domain's bias, per-id effects, dense slopes, the f0 × f1 interaction
    and (with ``conflict``) the last column's sign-reversed effect."""
    num_sparse, num_dense = cfg.num_sparse, cfg.num_dense
    logit = st.bias[planted].copy()
    sparse_scale = 1.0 / math.sqrt(num_sparse)
    for j in range(num_sparse):
        ids = sparse_ids[j]
        logit += sparse_scale * (0.5 * st.shared_eff[j, ids] + 0.8 * st.domain_eff[j, planted, ids])
    if num_dense:
        # slopes around each domain's own mean: the mean shift identifies the domain, the slope is the conflict
        dense_scale = 0.8 / math.sqrt(num_dense)
        for d in range(num_dense):
            logit += dense_scale * (dense[:, d] - st.dense_mean[planted, d]) * st.dense_w[planted, d]
    if num_sparse >= 2:
        # rank-by-rank 1-D gathers: an einsum over gathered [N, R] rows is several times slower at 10M rows
        pair = np.zeros(cfg.rows)
        for r in range(INTERACTION_RANK):
            pair += st.inter_a[:, r][sparse_ids[0]] * st.inter_b[:, r][sparse_ids[1]]
        logit += 0.8 * st.inter_sign[planted] * pair
    if st.conflict_eff is not None:
        logit += cfg.conflict * st.inter_sign[planted] * st.conflict_eff[sparse_ids[-1]]
    return logit


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
    # Two independent streams: the structure must not depend on N, the samples must.
    structure_seq, sample_seq = np.random.SeedSequence(seed).spawn(2)
    if sample_seed is not None:
        sample_seq = np.random.SeedSequence([seed, sample_seed])
    sample_rng = np.random.default_rng(sample_seq)
    structure = _draw_structure(cfg, np.random.default_rng(structure_seq))
    planted, sparse_ids, dense = _draw_features(cfg, structure, sample_rng)
    logit = _click_logit(cfg, structure, planted, sparse_ids, dense)
    label = (sample_rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    noisy = sample_rng.random(rows) < handcrafted_noise
    handcrafted = np.where(noisy, sample_rng.integers(0, num_domains, size=rows), planted).astype(np.int64)

    schema = synthetic_schema(num_sparse, num_dense, num_domains)
    cols = {f"f{j}": sparse_ids[j] for j in range(num_sparse)}
    cols |= {f"x{d}": dense[:, d].astype(np.float32) for d in range(num_dense)}
    cols[LABEL] = label
    cols[DOMAIN] = handcrafted
    table = pd.DataFrame({c: cols[c] for c in schema.columns}, copy=False)
    log.debug("synthetic: %d rows, %d domains, positive rate %.3f", rows, num_domains, float(label.mean()))
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
