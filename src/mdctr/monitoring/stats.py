"""Streaming statistics of the monitor: PSI, a fixed-size reservoir sample and a bottom-k row sample.

Everything here keeps memory flat in the number of rows seen: counts live in fixed arrays, samples have a fixed
size. Each accumulator takes one record batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

#: share given to an empty bin before taking logs, so a bin seen on one side only gives a large, finite PSI
PSI_EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPS) -> float:
    """Population stability index of two count (or share) vectors over the same bins [B].

    PSI = Σ (p_cur − p_ref) · ln(p_cur / p_ref), shares floored at ``eps``. Rules of thumb: < 0.1 stable,
    0.1–0.25 moderate, > 0.25 a major shift. NaN when either side is empty.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    p = np.maximum(ref / ref.sum(), eps)
    q = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts [B] → shares [B] summing to 1 (zeros when empty)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream (Algorithm R, vectorised per batch; seeded).

    Used for the KS statistic, which needs samples rather than histograms: ``size`` float64 values per column,
    whatever the number of rows seen.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.values = np.empty(size, dtype=np.float64)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if n == 0:
            return
        fill = max(0, min(self.size - self.seen, n))
        self.values[self.seen : self.seen + fill] = values[:fill]
        rest = values[fill:]
        if len(rest):
            # item with global index t (0-based) replaces a uniform slot j ∈ [0, t] when j < size
            t = self.seen + fill + np.arange(len(rest), dtype=np.float64)
            j = np.floor(self.rng.random(len(rest)) * (t + 1)).astype(np.int64)
            keep = j < self.size
            self.values[j[keep]] = rest[keep]
        self.seen += n

    def sample(self) -> np.ndarray:
        """The sample so far, float64 [min(size, seen)]."""
        return self.values[: min(self.size, self.seen)].copy()


class RowSample:
    """A uniform sample without replacement of at most ``size`` rows of a stream of record batches (bottom-k:
    every row gets a random key; the ``size`` smallest keys are kept). Seeded; memory ``size`` rows."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.frame: pd.DataFrame | None = None
        self.keys = np.empty(0)

    def add(self, batch: pa.RecordBatch) -> None:
        """Offer every row of ``batch``; only rows whose key can still enter the sample are converted to pandas."""
        if self.size <= 0 or batch.num_rows == 0:
            return
        keys = self.rng.random(batch.num_rows)
        if self.frame is not None and len(self.frame) >= self.size:
            take = np.flatnonzero(keys < self.keys.max())
            if len(take) == 0:
                return
            batch, keys = batch.take(pa.array(take)), keys[take]
        frame = batch.to_pandas()
        if self.frame is not None:
            frame = pd.concat([self.frame, frame], ignore_index=True)
            keys = np.concatenate([self.keys, keys])
        if len(frame) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size])
            frame, keys = frame.iloc[keep].reset_index(drop=True), keys[keep]
        self.frame, self.keys = frame, keys

    def sample(self) -> pd.DataFrame | None:
        return self.frame


@dataclass(frozen=True)
class Quantiles:
    """Bin edges [B-1] of a dense feature from reference quantiles; ``bin(x)`` → bin index in 0..B-1."""

    edges: np.ndarray

    @classmethod
    def from_sample(cls, values: np.ndarray, bins: int) -> Quantiles:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return cls(np.empty(0))
        # edges are data values ("lower"), so a discrete feature (an age code) gets one bin per value at most,
        # and ties collapse edges: keep each once
        inner = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
        return cls(np.unique(inner))

    @property
    def num_bins(self) -> int:
        return len(self.edges) + 1

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Counts [num_bins] of ``values`` per bin; bin b holds edges[b-1] < x ≤ edges[b]."""
        idx = np.searchsorted(self.edges, np.asarray(values, dtype=np.float64), side="left")
        return np.bincount(idx, minlength=self.num_bins)
