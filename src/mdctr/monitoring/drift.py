"""Drift of a window against its reference: per feature PSI (+ OOV share, KS for dense) and domain shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from mdctr.monitoring.reference import Reference
from mdctr.monitoring.stats import psi, shares
from mdctr.monitoring.window import WindowStats


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift.

    Attributes:
        feature: column name; ``kind``: ``"sparse"`` or ``"dense"``.
        psi: PSI over the bins (sparse: top-K reference categories + "other" + OOV; dense: reference-quantile
            bins of the standardised values).
        oov_share: window share of out-of-vocabulary values (sparse only; None for dense).
        baseline_oov_share: the valid split's OOV share (sparse only).
        ks: two-sample KS statistic on reservoir samples (dense only); ``ks_pvalue`` its p-value.
        bins: (label, reference share, window share) per bin, for the report.
    """

    feature: str
    kind: str
    psi: float
    oov_share: float | None
    baseline_oov_share: float | None
    ks: float | None
    ks_pvalue: float | None
    bins: tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class DomainShares:
    """Shares of one kind of domain (hand-crafted or mined) in the reference and the window.

    Attributes:
        kind: ``"handcrafted"`` or ``"mined"``; ``names``: label per domain index.
        reference: reference shares [K] (None: no reference for this kind); ``window``: window shares [K].
        window_rows: window rows with a domain of this kind; ``psi``: PSI over the shares (NaN: no reference).
        ratio: window share / reference share per domain [K] (inf where the reference share is 0).
        reference_source: where the reference shares came from.
    """

    kind: str
    names: tuple[str, ...]
    reference: tuple[float, ...] | None
    window: tuple[float, ...]
    window_rows: int
    psi: float
    ratio: tuple[float, ...] | None
    reference_source: str


def sparse_drift(ref: Reference, win: WindowStats, col: str, top_k: int) -> FeatureDrift:
    rc, wc = ref.sparse_counts[col], win.sparse_counts[col]
    vocab = ref.spec.vocab[col]
    # top-K ids by reference frequency (ids 1..V; 0 is OOV)
    order = np.argsort(-rc[1:], kind="stable")[:top_k] + 1
    top = order[rc[order] > 0]
    rest = np.ones(len(rc), dtype=bool)
    rest[top] = False
    rest[0] = False
    ref_bins = np.concatenate([rc[top], [rc[rest].sum(), rc[0]]])
    win_bins = np.concatenate([wc[top], [wc[rest].sum(), wc[0]]])
    labels = [str(vocab[i - 1]) for i in top] + ["(other)", "(OOV)"]
    rs, ws = shares(ref_bins), shares(win_bins)
    return FeatureDrift(
        feature=col,
        kind="sparse",
        psi=psi(ref_bins, win_bins),
        oov_share=float(ws[-1]) if win_bins.sum() else math.nan,
        baseline_oov_share=ref.baseline_oov.get(col, 0.0),
        ks=None,
        ks_pvalue=None,
        bins=tuple((lab, float(a), float(b)) for lab, a, b in zip(labels, rs, ws, strict=True)),
    )


def dense_drift(ref: Reference, win: WindowStats, col: str) -> FeatureDrift:
    bins = ref.dense_bins[col]
    ref_counts = bins.counts(ref.dense_sample[col])
    win_counts = win.dense_counts[col]
    sample = win.dense_sample[col].sample()
    ks = ks_2samp(ref.dense_sample[col], sample) if len(sample) and len(ref.dense_sample[col]) else None
    edges = [-math.inf, *bins.edges.tolist(), math.inf]
    labels = [f"({edges[i]:.3g}, {edges[i + 1]:.3g}]" for i in range(bins.num_bins)]
    return FeatureDrift(
        feature=col,
        kind="dense",
        psi=psi(ref_counts, win_counts),
        oov_share=None,
        baseline_oov_share=None,
        ks=None if ks is None else float(ks.statistic),
        ks_pvalue=None if ks is None else float(ks.pvalue),
        bins=tuple(
            (lab, float(a), float(b))
            for lab, a, b in zip(labels, shares(ref_counts), shares(win_counts), strict=True)
        ),
    )


def domain_shares(
    kind: str, names: list[str], ref_counts: np.ndarray | None, win_counts: np.ndarray, source: str
) -> DomainShares:
    size = max(len(names), len(win_counts), 0 if ref_counts is None else len(ref_counts))
    names = names + [str(i) for i in range(len(names), size)]
    win = np.pad(np.asarray(win_counts, dtype=np.float64), (0, size - len(win_counts)))
    ws = shares(win)
    if ref_counts is None:
        return DomainShares(
            kind, tuple(names), None, tuple(ws.tolist()), int(win.sum()), math.nan, None, source
        )
    ref = np.pad(np.asarray(ref_counts, dtype=np.float64), (0, size - len(ref_counts)))
    rs = shares(ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(rs > 0, ws / np.where(rs > 0, rs, 1.0), np.where(ws > 0, math.inf, math.nan))
    return DomainShares(
        kind,
        tuple(names),
        tuple(rs.tolist()),
        tuple(ws.tolist()),
        int(win.sum()),
        psi(ref, win) if win.sum() else math.nan,
        tuple(ratio.tolist()),
        source,
    )


def all_drift(ref: Reference, win: WindowStats, top_k: int) -> dict[str, Any]:
    """Every feature's drift and the two domain-share comparisons."""
    sch = ref.spec.schema
    features = [sparse_drift(ref, win, c, top_k) for c in sch.sparse] + [
        dense_drift(ref, win, c) for c in sch.dense
    ]
    handcrafted = domain_shares(
        "handcrafted", list(sch.domain_names), ref.domain_counts, win.domain_counts, "train split"
    )
    mined_names = [
        f"code {i}"
        for i in range(max(len(win.mined_counts), 0 if ref.mined_counts is None else len(ref.mined_counts)))
    ]
    mined = domain_shares("mined", mined_names, ref.mined_counts, win.mined_counts, ref.mined_source)
    return {"features": features, "handcrafted": handcrafted, "mined": mined}
