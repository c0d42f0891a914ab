"""A calibrated bundle (``calibration.json``, issue #23 item 6): it round-trips with identical predictions,
serving applies the per-domain temperatures (offline and over HTTP), and the schema refuses a bad file."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mdctr.serving import Predictor, save_bundle
from mdctr.serving.app import ScoringApp
from mdctr.serving.bundle_schema import CALIBRATION_FILE, BundleError
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.training.calibration import Calibration

#: deliberately far from 1 and different per domain, so an unapplied calibration cannot pass for one
TEMPS = {"young": 2.5, "middle": 0.5}
GLOBAL_T = 1.7


def _calibration() -> Calibration:
    return Calibration(DEMO_SCHEMA.domain_names, GLOBAL_T, dict(TEMPS), min_rows=10)


def _calibrated_bundle(demo: DemoBundle, path: Path) -> Path:
    raw = Predictor.load(demo.path)
    return save_bundle(
        path,
        model=raw.model,
        model_name=raw.info.model_name,
        model_config=raw.info.model_config,
        width=raw.info.width,
        spec=raw.spec,
        domain_source=raw.info.domain_source,
        calibration=_calibration().to_dict(),
    )


def _rows(demo: DemoBundle, n: int = 60):
    return demo.table[list(DEMO_SCHEMA.serving_columns)].head(n).reset_index(drop=True)


def _expected(demo: DemoBundle, rows, domains: np.ndarray) -> np.ndarray:
    raw = Predictor.load(demo.path)
    data = raw.encode(rows)
    with torch.no_grad():
        logits = raw.model(data.batch(0, len(data))).double().numpy()
    t = np.array([TEMPS["young"], TEMPS["middle"], GLOBAL_T])  # "old" has no own T: the global one
    return 1 / (1 + np.exp(-logits / np.where(domains >= 0, t[np.clip(domains, 0, 2)], GLOBAL_T)))


def test_calibrated_bundle_round_trips_with_identical_predictions(demo: DemoBundle, tmp_path: Path) -> None:
    path = _calibrated_bundle(demo, tmp_path / "cal")
    assert json.loads((path / CALIBRATION_FILE).read_text())["temperatures"] == TEMPS
    rows = _rows(demo)
    pred = Predictor.load(path)
    out = pred.predict(rows)
    np.testing.assert_allclose(out, _expected(demo, rows, rows["domain"].to_numpy()), rtol=1e-6)
    assert not np.allclose(out, Predictor.load(demo.path).predict(rows), rtol=1e-3)  # calibration applied
    np.testing.assert_array_equal(Predictor.load(path).predict(rows), out)  # a reload predicts identically
    # the domain column is optional for this model: without it every row takes the global temperature
    without = pred.predict(rows.drop(columns=["domain"]))
    np.testing.assert_allclose(without, _expected(demo, rows, np.full(len(rows), -1)), rtol=1e-6)


def _call(app: ScoringApp, path: str, body: dict) -> tuple[int, dict]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_a_served_request_gets_the_calibrated_pctr(demo: DemoBundle, tmp_path: Path) -> None:
    path = _calibrated_bundle(demo, tmp_path / "cal")
    rows = _rows(demo, 12)
    app = ScoringApp(Predictor.load(path), model_name="m")
    split = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    status, body = _call(app, "/invocations", split)
    assert status == 200, body
    np.testing.assert_allclose(
        body["predictions"], _expected(demo, rows, rows["domain"].to_numpy()), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(global_temperature=0.0), "calibration.json: global_temperature: Input should be greater than 0"),
        (lambda d: d["temperatures"].update(young=-1.0), "calibration.json: temperatures.young: Input should be greater than 0"),
        (lambda d: d["temperatures"].update(young=float("inf")), "calibration.json: temperatures.young: Input should be a finite number"),
        (lambda d: d["temperatures"].update(mars=1.0), "calibration.json: temperatures: 'mars' is not a hand-crafted domain"),
        (lambda d: d.update(method="isotonic"), "calibration.json: method: Input should be 'temperature'"),
        (lambda d: d.update(version=7), "calibration.json: version: 7 is not a known calibration format version"),
    ],
)  # fmt: skip
def test_a_bad_calibration_file_is_refused_on_load(
    demo: DemoBundle, tmp_path: Path, edit, message: str
) -> None:
    path = _calibrated_bundle(demo, tmp_path / "cal")
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    d = json.loads((bad / CALIBRATION_FILE).read_text())
    edit(d)
    (bad / CALIBRATION_FILE).write_text(json.dumps(d))
    with pytest.raises(BundleError) as e:
        Predictor.load(bad)
    assert str(e.value).startswith(message), str(e.value)
