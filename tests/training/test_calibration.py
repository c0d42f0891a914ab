"""Per-domain temperature scaling (issue #23 item 6): it lowers the validation logloss of a mis-scaled model,
keeps AUC within each domain, falls back to the global temperature for small or one-class domains, and
``train_model(calibrate="temperature")`` reports test metrics of the calibrated model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mdctr.data.prepare import PreparedData
from mdctr.training import TrainConfig, train_model
from mdctr.training.calibration import Calibration, bce_of_logits, fit_calibration
from mdctr.training.run import base_rate_metrics

NAMES = ("a", "b", "small", "one-class")


def _mis_scaled(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, true logits, model logits, domains): domain a's model logits are 3× too confident, b's 0.4×."""
    rng = np.random.default_rng(seed)
    sizes = (4000, 4000, 50, 300)
    domains = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    true = rng.normal(0.0, 1.5, domains.size)
    labels = (rng.random(domains.size) < 1 / (1 + np.exp(-true))).astype(np.float64)
    labels[domains == 3] = 0.0  # one class only
    scale = np.array([3.0, 0.4, 2.0, 2.0])[domains]
    return labels, true, true * scale, domains


def test_temperature_lowers_logloss_and_keeps_auc_within_each_domain() -> None:
    y, _, z, d = _mis_scaled()
    cal = fit_calibration(y, z, d, NAMES)
    calibrated = cal.apply_logits(z, d)
    assert bce_of_logits(y, calibrated) < bce_of_logits(y, z) - 0.01
    assert cal.fitted["valid_logloss_after"] < cal.fitted["valid_logloss_before"]
    # each domain is rescaled by its own temperature, close to the scale it was distorted by
    assert cal.temperatures["a"] == pytest.approx(3.0, rel=0.15)
    assert cal.temperatures["b"] == pytest.approx(0.4, rel=0.15)
    for k in (0, 1):  # T > 0 is monotonic: the ranking within a domain does not move
        m = d == k
        assert roc_auc_score(y[m], calibrated[m]) == pytest.approx(roc_auc_score(y[m], z[m]), abs=1e-12)
        assert bce_of_logits(y[m], calibrated[m]) < bce_of_logits(y[m], z[m])


def test_small_and_one_class_domains_use_the_global_temperature() -> None:
    y, _, z, d = _mis_scaled()
    cal = fit_calibration(y, z, d, NAMES, min_rows=200)
    assert set(cal.temperatures) == {"a", "b"}  # 50 rows is too few; domain 3 holds one class
    t = cal.per_domain()
    assert t[2] == t[3] == t[-1] == cal.global_temperature
    # an unknown domain (a request without the domain column: id -1) takes the global temperature too
    np.testing.assert_array_equal(cal.apply_logits(np.array([2.0]), np.array([-1])), [2.0 / t[-1]])


def test_calibration_json_round_trip() -> None:
    y, _, z, d = _mis_scaled()
    cal = fit_calibration(y, z, d, NAMES)
    again = Calibration.from_dict(cal.to_dict(), NAMES)
    np.testing.assert_array_equal(again.apply_probs(z, d), cal.apply_probs(z, d))
    probs = cal.apply_probs(np.array([-800.0, 0.0, 800.0]), np.array([0, 0, 0]))
    assert np.all(np.isfinite(probs)) and probs[1] == 0.5  # no overflow for extreme logits


def test_base_rate_predictor_logloss() -> None:
    train = np.array([1, 0, 0, 0], dtype=np.float64)
    test = np.array([1, 0], dtype=np.float64)
    out = base_rate_metrics(train, test)
    assert out["positive_rate"] == 0.25
    assert out["logloss"] == pytest.approx(-(math.log(0.25) + math.log(0.75)) / 2)


def test_train_model_reports_the_calibrated_model(small_prepared: PreparedData) -> None:
    base = TrainConfig(epochs=2, batch_size=256, lr=0.05, device="cpu")
    raw = train_model(small_prepared, "dnn", "none", width=0.25, config=base)
    cal = train_model(
        small_prepared,
        "dnn",
        "none",
        width=0.25,
        config=TrainConfig(**{**base.__dict__, "calibrate": "temperature"}),
    )
    assert raw.calibration is None and cal.calibration is not None
    # same training (calibration is after it), so the calibrated validation logloss can only be lower
    assert cal.fit.best_valid_logloss == raw.fit.best_valid_logloss
    assert cal.valid_logloss <= raw.valid_logloss + 1e-12
    assert cal.valid_logloss == pytest.approx(cal.calibration.fitted["valid_logloss_after"])
    assert not np.array_equal(cal.predictions, raw.predictions)  # test metrics are the calibrated model's
    names = small_prepared.spec.schema.domain_names
    for name in names:  # per-domain test AUC is unchanged (monotonic per domain)
        assert cal.metrics["domains"][name]["auc"] == pytest.approx(
            raw.metrics["domains"][name]["auc"], abs=1e-9
        )
    assert raw.base_rate["logloss"] == cal.base_rate["logloss"] > 0
    summary = cal.summary()
    assert summary["calibration"]["method"] == "temperature" and summary["base_rate_logloss"] > 0
