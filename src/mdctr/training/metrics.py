"""Test and validation metrics: AUC and logloss pooled over all rows, and per hand-crafted domain.

A metric that is undefined for a subset (AUC with one class, anything with no rows) is NaN with a ``reason``
string beside it, never an exception: a rare domain must not crash a whole benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def _as_array(x: Any, dtype: type) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """AUC and logloss of one subset.

    Args:
        labels: [N] 0/1.
        probs: [N] predicted click probabilities in [0, 1].

    Returns:
        ``{"rows", "positive_rate", "auc", "logloss"}`` plus ``"reason"`` when a value is NaN.
    """
    n = int(labels.shape[0])
    if n == 0:
        return {
            "rows": 0,
            "positive_rate": math.nan,
            "auc": math.nan,
            "logloss": math.nan,
            "reason": "no rows",
        }
    out: dict[str, Any] = {"rows": n, "positive_rate": float(labels.mean())}
    # logloss is defined for one class too; naming both labels keeps sklearn from rejecting that case
    out["logloss"] = float(log_loss(labels, probs, labels=[0, 1]))
    if np.unique(labels).size < 2:
        out["auc"] = math.nan
        out["reason"] = f"only one class present (all labels = {int(labels[0])}); AUC is undefined"
    else:
        out["auc"] = float(roc_auc_score(labels, probs))
    return out


def evaluate_predictions(
    labels: Any, probs: Any, domains: Any, domain_names: Sequence[str]
) -> dict[str, Any]:
    """Overall and per-domain AUC/logloss.

    Args:
        labels: [N] 0/1 (numpy array or tensor).
        probs: [N] predicted probabilities.
        domains: [N] hand-crafted domain id in ``range(len(domain_names))``.
        domain_names: name of each domain, index = id.

    Returns:
        ``{"rows", "positive_rate", "auc", "logloss", ["reason"], "domains": {name: {same keys}}}``; the
        overall values pool every row (not an average of domains).
    """
    y = _as_array(labels, np.float64)
    p = _as_array(probs, np.float64)
    d = _as_array(domains, np.int64)
    if not (y.shape == p.shape == d.shape):
        raise ValueError(f"labels {y.shape}, probs {p.shape} and domains {d.shape} must have the same shape")
    out = binary_metrics(y, p)
    out["domains"] = {}
    for k, name in enumerate(domain_names):
        mask = d == k
        out["domains"][str(name)] = binary_metrics(y[mask], p[mask])
    return out


def auc_logloss(labels: Any, probs: Any) -> tuple[float, float]:
    """(AUC, logloss) pooled over all rows; AUC is NaN when only one class is present."""
    m = binary_metrics(_as_array(labels, np.float64), _as_array(probs, np.float64))
    return m["auc"], m["logloss"]
