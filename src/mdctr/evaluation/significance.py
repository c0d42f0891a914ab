"""Paired significance tests between two leaderboard entries.

* Several seeds: a paired t-test (``scipy.stats.ttest_rel``) on the per-seed test AUCs, paired by seed. The
  seed is the unit of replication, so this accounts for training noise, which dominates at these data sizes.
* One seed (or fewer than two seeds in common): the DeLong test for two correlated AUCs on the same test
  rows (DeLong, DeLong & Clarke-Pearson 1988; the midrank formulation of Sun & Xu 2014). It is exact in the
  sense of having no resampling noise and runs in O(N log N), where a paired bootstrap would need ~1000 AUCs
  per comparison for a stable p-value. It only measures test-set sampling noise, not training noise, so it is
  a fallback and the result says which test was used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedTest:
    """Outcome of comparing entry A with entry B (``diff`` = A − B in AUC, two-sided ``p_value``)."""

    method: str  # "paired_t" | "delong" | "none"
    n: int  # seeds paired (t-test) or test rows (DeLong)
    diff: float
    statistic: float
    p_value: float
    note: str = ""


def paired_ttest(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> PairedTest:
    """Paired t-test of per-seed metrics ``a`` vs ``b`` (same order = same seed)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same shape; got {x.shape} and {y.shape}")
    diff = float(np.mean(x - y)) if x.size else math.nan
    if x.size < 2:
        return PairedTest("none", int(x.size), diff, math.nan, math.nan, "fewer than two paired seeds")
    if np.allclose(x - y, (x - y)[0]):
        # constant differences have zero variance: t is ±inf (or undefined when all are 0)
        p = 1.0 if diff == 0 else 0.0
        return PairedTest("paired_t", int(x.size), diff, math.copysign(math.inf, diff) if diff else 0.0, p)
    res = stats.ttest_rel(x, y)
    return PairedTest("paired_t", int(x.size), diff, float(res.statistic), float(res.pvalue))


def _structural_components(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's per-positive (V10) and per-negative (V01) placement values for one scorer."""
    m, n = pos.size, neg.size
    ranks_all = stats.rankdata(np.concatenate([pos, neg]))  # midranks: ties count one half
    ranks_pos, ranks_neg = stats.rankdata(pos), stats.rankdata(neg)
    auc = (ranks_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (ranks_all[:m] - ranks_pos) / n  # share of negatives each positive beats
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m  # share of positives that beat each negative
    return float(auc), v10, v01


def delong_test(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> PairedTest:
    """DeLong test of AUC(A) vs AUC(B) on the same rows.

    Args:
        labels: [N] 0/1.
        probs_a, probs_b: [N] scores of the two models for the same rows.
    """
    y = np.asarray(labels).reshape(-1) > 0.5
    a, b = np.asarray(probs_a, np.float64).reshape(-1), np.asarray(probs_b, np.float64).reshape(-1)
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"labels {y.shape} and predictions {a.shape}, {b.shape} must have the same shape")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return PairedTest("delong", y.size, math.nan, math.nan, math.nan, "only one class in the labels")
    auc_a, v10_a, v01_a = _structural_components(a[y], a[~y])
    auc_b, v10_b, v01_b = _structural_components(b[y], b[~y])
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    if var <= 1e-300:
        return PairedTest("delong", y.size, diff, 0.0, 1.0 if diff == 0 else 0.0, "zero variance")
    z = diff / math.sqrt(var)
    return PairedTest("delong", y.size, diff, z, float(2 * stats.norm.sf(abs(z))))


def compare_entries(
    auc_a: Mapping[int, float],
    auc_b: Mapping[int, float],
    probs_a: Mapping[int, np.ndarray] | None = None,
    probs_b: Mapping[int, np.ndarray] | None = None,
    labels: np.ndarray | Mapping[int, np.ndarray] | None = None,
) -> PairedTest:
    """Entry A vs entry B: paired t-test over common seeds, else DeLong on one common seed's predictions.

    Args:
        auc_a, auc_b: test AUC per seed.
        probs_a, probs_b: test predictions per seed (for the one-seed fallback), same row order as ``labels``.
        labels: [N] test labels, or the labels of each seed's test split (grids where every seed draws its
            own split): two seeds' predictions are compared only when their test rows' labels are the same.
    """
    common = sorted(set(auc_a) & set(auc_b))
    if len(common) >= 2:
        return paired_ttest([auc_a[s] for s in common], [auc_b[s] for s in common])
    if probs_a and probs_b and labels is not None:
        pairs = sorted(set(probs_a) & set(probs_b)) or [min(probs_a)]
        seed_a = pairs[0]
        seed_b = seed_a if seed_a in probs_b else min(probs_b)
        rows_a, rows_b = (labels.get(s) if isinstance(labels, Mapping) else labels for s in (seed_a, seed_b))
        if rows_a is None or rows_b is None or (rows_a is not rows_b and not np.array_equal(rows_a, rows_b)):
            return PairedTest(
                "none",
                len(common),
                math.nan,
                math.nan,
                math.nan,
                "no common seed; the seeds' test rows differ",
            )
        result = delong_test(rows_a, probs_a[seed_a], probs_b[seed_b])
        return PairedTest(result.method, result.n, result.diff, result.statistic, result.p_value, result.note)
    return PairedTest("none", len(common), math.nan, math.nan, math.nan, "no common seeds and no predictions")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values for one family of comparisons (same order as given).

    Non-finite p-values (no test) are left as they are and do not count towards the family size m. The
    adjusted value of the i-th smallest p is max over j ≤ i of min(1, (m − j + 1)·p_(j)), so rejecting where
    the adjusted p < α controls the family-wise error rate at α.
    """
    finite = [(p, i) for i, p in enumerate(p_values) if math.isfinite(p)]
    m = len(finite)
    out = [float(p) for p in p_values]
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def against_reference(
    values: Mapping[str, Mapping[int, float]], reference: str
) -> list[tuple[str, list[int], float, float, float]]:
    """Every group against ``reference`` on one metric (e.g. validation AUC per seed, to choose a default).

    Returns (group, common seeds, mean difference group − reference over them, paired t-test p, Holm-adjusted
    p over the returned rows), groups in the order given; a group with fewer than two seeds in common with the
    reference is left out (no paired test).
    """
    if reference not in values:
        raise KeyError(f"reference {reference!r} is not among the groups {sorted(values)}")
    rows = []
    for group, vals in values.items():
        seeds = sorted(set(vals) & set(values[reference]))
        if group == reference or len(seeds) < 2:
            continue
        test = paired_ttest([vals[s] for s in seeds], [values[reference][s] for s in seeds])
        rows.append((group, seeds, test.diff, test.p_value))
    adjusted = holm([r[3] for r in rows])
    return [(*row, p_holm) for row, p_holm in zip(rows, adjusted, strict=True)]


def against_reference_markdown(values: Mapping[str, Mapping[int, float]], reference: str, metric: str) -> str:
    """:func:`against_reference` as a Markdown table."""
    lines = [
        f"| entry | seeds | Δ {metric} vs {reference} | p (paired t) | p (Holm) |",
        "|---|---|---|---|---|",
    ]
    for group, seeds, diff, p, p_holm in against_reference(values, reference):
        lines.append(f"| {group} | {','.join(map(str, seeds))} | {diff:+.4f} | {p:.3g} | {p_holm:.3g} |")
    return "\n".join(lines)


def auc_confidence_interval(
    aucs: Sequence[float],
    labels: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    level: float = 0.95,
) -> tuple[float, float, str]:
    """Two-sided ``level`` interval for an entry's AUC → (low, high, method).

    Two or more seeds: Student-t interval of the mean over seeds (``"t"``). One seed with its predictions:
    the DeLong variance of that AUC on the pooled rows, normal interval (``"delong"``). Otherwise NaNs.
    """
    x = np.asarray([a for a in aucs if math.isfinite(a)], dtype=np.float64)
    if x.size >= 2:
        half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
        return float(x.mean()) - half, float(x.mean()) + half, "t"
    if x.size == 1 and labels is not None and probs is not None:
        y = np.asarray(labels).reshape(-1) > 0.5
        p = np.asarray(probs, np.float64).reshape(-1)
        m, n = int(y.sum()), int((~y).sum())
        if m > 1 and n > 1:
            auc, v10, v01 = _structural_components(p[y], p[~y])
            half = float(
                stats.norm.ppf(0.5 + level / 2) * math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
            )
            return auc - half, auc + half, "delong"
    return math.nan, math.nan, "none"
