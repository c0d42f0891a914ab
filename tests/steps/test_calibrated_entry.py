"""train_model/evaluate steps with the issue #23 item 6 options: early stopping on logloss and temperature
calibration flow from ``train_options`` into the bundle (``calibration.json``) and the results; the results
carry validation logloss and the base-rate predictor's test logloss, and the leaderboard shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mdctr.data.prepare import read_prepared
from mdctr.serving import Predictor
from mdctr.serving.bundle_schema import CALIBRATION_FILE
from mdctr.steps.train_model import METRICS_FILE, PREDICTIONS_FILE, TrainStepConfig, train_model


@pytest.fixture(scope="module")
def calibrated(ws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("calibrated")
    return train_model(
        prepared_dir=ws.prepared.path,
        domains_dir=None,
        bundle_dir=root / "bundle",
        results_dir=root / "results",
        config=TrainStepConfig(
            model_name="dnn",
            domain_source="none",
            epochs=2,
            train_options=json.dumps(
                {"batch_size": 512, "early_stop_metric": "logloss", "calibrate": "temperature"}
            ),
        ),
    )


def test_calibrated_entry_writes_calibration_and_logloss_results(calibrated: Any, ws: Any) -> None:
    summary = json.loads((calibrated.results_dir / METRICS_FILE).read_text())
    assert summary["early_stop_metric"] == "logloss"
    assert summary["calibration"]["method"] == "temperature"
    ov = summary["overall"]
    assert ov["base_rate_logloss"] > 0 and 0 < ov["train_positive_rate"] < 1
    assert ov["valid_logloss"] <= ov["best_valid_logloss"] + 1e-12  # calibration never raises it
    assert (calibrated.bundle_dir / CALIBRATION_FILE).is_file()

    # the test predictions evaluated (and compared on the leaderboard) are the served, calibrated model's
    pred = Predictor.load(calibrated.bundle_dir)
    assert pred.calibration is not None
    test = read_prepared(ws.prepared.path).test
    routed = test.with_domain(torch.zeros(len(test), dtype=torch.int64))
    with torch.no_grad():
        logits = pred.model(routed.batch(0, len(routed))).double().numpy()
    saved = np.load(calibrated.results_dir / PREDICTIONS_FILE)
    np.testing.assert_allclose(
        saved["probs"], pred.calibration.apply_probs(logits, test.handcrafted.numpy()), rtol=1e-5
    )


def test_evaluate_shows_logloss_and_the_base_rate(
    calibrated: Any, evaluate_step: Any, tmp_path: Path
) -> None:
    evaluate_step(tmp_path, [calibrated], "", "")
    board = json.loads((tmp_path / "tables" / "leaderboard.json").read_text())["entries"][0]
    summary = json.loads((calibrated.results_dir / METRICS_FILE).read_text())["overall"]
    assert board["base_logloss"] == pytest.approx(summary["base_rate_logloss"])
    assert board["valid_logloss_mean"] == pytest.approx(summary["valid_logloss"])
    assert "base-rate logloss" in (tmp_path / "leaderboard.md").read_text()
    assert "base-rate predictor" in (tmp_path / "report.html").read_text()
