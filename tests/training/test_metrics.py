from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from mdctr.training.metrics import evaluate_predictions


def test_overall_pooled_and_per_domain() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 1e-6, 1 - 1e-6)
    d = rng.integers(0, 2, 400)
    m = evaluate_predictions(y, p, d, ["a", "b"])
    assert math.isclose(m["auc"], roc_auc_score(y, p))
    assert math.isclose(m["logloss"], log_loss(y, p))
    assert m["rows"] == 400
    for k, name in enumerate(["a", "b"]):
        mask = d == k
        assert math.isclose(m["domains"][name]["auc"], roc_auc_score(y[mask], p[mask]))
        assert m["domains"][name]["rows"] == int(mask.sum())
        assert "reason" not in m["domains"][name]


def test_one_class_and_empty_domains_get_nan_with_reason() -> None:
    y = np.array([0, 1, 0, 1, 1, 1], dtype=float)
    p = np.array([0.2, 0.8, 0.3, 0.6, 0.7, 0.9])
    d = np.array([0, 0, 0, 0, 1, 1])  # domain 1: positives only; domain 2: no rows
    m = evaluate_predictions(y, p, d, ["mixed", "positives", "empty"])
    assert m["domains"]["mixed"]["auc"] == 1.0
    pos = m["domains"]["positives"]
    assert math.isnan(pos["auc"]) and "one class" in pos["reason"]
    assert math.isclose(pos["logloss"], -np.mean(np.log([0.7, 0.9])))
    empty = m["domains"]["empty"]
    assert empty["rows"] == 0 and math.isnan(empty["auc"]) and math.isnan(empty["logloss"])
    assert empty["reason"] == "no rows"
    assert math.isfinite(m["auc"])
