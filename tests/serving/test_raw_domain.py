"""Serving takes the raw domain value the user trained on (a table's ``country`` = ``"de"``), through the value →
id vocabulary kept in the bundle's feature_spec.json: offline (pyfunc path), over the ASGI app (``/invocations``
and v2), and the refusals of unknown or mistyped values name the column and the value."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mdctr.data import load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.models import ModelInputs, build_model
from mdctr.serving import Predictor
from mdctr.serving.app import ScoringApp
from mdctr.serving.bundle import save_bundle
from mdctr.serving.request import Columns, RequestError, RequestParser

ROWS = 600


def _table(root: Path, domains: list[Any]) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    pd.DataFrame(
        {
            "user": [f"u{i}" for i in rng.integers(0, 40, ROWS)],
            "item": rng.integers(1, 30, ROWS),
            "price": rng.uniform(1, 10, ROWS).round(2),
            "clicked": rng.integers(0, 2, ROWS),
            "country": [domains[i] for i in rng.integers(0, len(domains), ROWS)],
        }
    ).to_csv(root / "events.csv", index=False)
    schema = {"name": "shop", "sparse": ["user", "item"], "dense": ["price"], "label": "clicked"}
    (root / "schema.yaml").write_text(yaml.safe_dump({**schema, "domain": "country"}))
    return root


def _bundle(tmp_path: Path, domains: list[Any]) -> Path:
    """A STAR bundle routed by the table's hand-crafted domains (untrained: its towers differ by init)."""
    import torch

    prepared = prepare_in_memory(load_dataset("table", _table(tmp_path / "shop", domains)))
    spec = prepared.spec
    inputs = ModelInputs(vocab_sizes=spec.vocab_sizes, num_dense=spec.num_dense, num_domains=len(domains))
    torch.manual_seed(0)
    model = build_model("star", inputs)
    return save_bundle(
        tmp_path / "bundle",
        model=model,
        model_name="star",
        model_config={},
        width=1.0,
        spec=spec,
        domain_source="handcrafted",
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("raw-domain"), ["us", "de", "fr"])


def _rows(countries: list[Any]) -> pd.DataFrame:
    n = len(countries)
    return pd.DataFrame({"user": ["u1"] * n, "item": [3] * n, "price": [2.5] * n, "country": countries})


def test_spec_keeps_the_raw_domain_values_as_json(bundle: Path) -> None:
    spec = json.loads((bundle / "feature_spec.json").read_text())
    assert spec["meta"]["domain_values"] == ["de", "fr", "us"]  # sorted: ids 0, 1, 2
    assert spec["schema"]["domain_names"] == ["de", "fr", "us"]


def test_raw_value_maps_to_the_domain_id_it_was_trained_with(bundle: Path) -> None:
    predictor = Predictor.load(bundle)
    got = predictor.predict(_rows(["de", "us", "fr", "de"]))
    by_id = predictor.predict_columns(
        Columns(
            sparse={"user": ["u1"] * 4, "item": [3] * 4},
            dense=np.full((4, 1), 2.5),
            domain=np.array([0, 2, 1, 0]),
        )
    )
    np.testing.assert_array_equal(got, by_id)
    assert len({round(float(p), 9) for p in got[:3]}) == 3  # three towers: the domain reaches the model


@pytest.mark.parametrize(
    ("country", "shown"),
    [
        ("jp", "an unknown domain value 'jp'"),
        (0, "an unknown domain value 0"),
        (True, "an unknown domain value True"),
        (None, "a missing domain value"),
        ("DE", "an unknown domain value 'DE'"),
    ],
)
def test_unknown_or_mistyped_domain_value_is_refused_naming_column_and_value(
    bundle: Path, country: Any, shown: str
) -> None:
    with pytest.raises(RequestError, match=rf"column 'country' has {shown} \(row 1\)"):
        Predictor.load(bundle).predict(_rows(["de", country]))


def test_integer_domain_values_are_taken_as_written(tmp_path: Path) -> None:
    """Domains 10/20/30 in the CSV: a request sends 20 (the raw value), never its id 1."""
    predictor = Predictor.load(_bundle(tmp_path, [10, 20, 30]))
    assert predictor.spec.domain_values == [10, 20, 30]
    assert predictor.parser.advertised("country") == "INT64"
    ids = predictor.parser.from_records([{"user": "u1", "item": 3, "price": 1.0, "country": 20}]).domain
    assert ids.tolist() == [1]
    with pytest.raises(RequestError, match=r"unknown domain value 1 \(row 0\)"):
        predictor.parser.from_records([{"user": "u1", "item": 3, "price": 1.0, "country": 1}])


def test_without_a_vocabulary_the_domain_is_still_an_id() -> None:
    parser = RequestParser(kinds={"f": "int", "d": "domain"}, num_domains=2, mean=np.zeros(0), std=np.ones(0))
    assert parser.from_records([{"f": 1, "d": 1}]).domain.tolist() == [1]
    with pytest.raises(RequestError, match="expects integer domain ids"):
        parser.from_records([{"f": 1, "d": "de"}])


def _call(app: ScoringApp, path: str, body: dict | None = None) -> tuple[int, dict]:
    scope = {
        "type": "http",
        "method": "GET" if body is None else "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": json.dumps(body or {}).encode(), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_asgi_app_serves_raw_domain_values_over_invocations_and_v2(bundle: Path) -> None:
    predictor = Predictor.load(bundle)
    app = ScoringApp(predictor, model_name="m")
    want = predictor.predict(_rows(["fr", "de"])).tolist()

    status, meta = _call(app, "/v2/models/m")
    assert status == 200 and {"name": "country", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]

    records = _rows(["fr", "de"]).to_dict(orient="records")
    status, out = _call(app, "/invocations", {"dataframe_records": records})
    assert status == 200 and out["predictions"] == pytest.approx(want, rel=1e-12)

    tensors = [
        {"name": "user", "datatype": "BYTES", "shape": [2], "data": ["u1", "u1"]},
        {"name": "item", "datatype": "INT64", "shape": [2], "data": [3, 3]},
        {"name": "price", "datatype": "FP64", "shape": [2], "data": [2.5, 2.5]},
        {"name": "country", "datatype": "BYTES", "shape": [2], "data": ["fr", "de"]},
    ]
    status, out = _call(app, "/v2/models/m/infer", {"inputs": tensors})
    assert status == 200 and out["outputs"][0]["data"] == pytest.approx(want, rel=1e-12)

    records[1]["country"] = "jp"
    status, out = _call(app, "/invocations", {"dataframe_records": records})
    assert status == 400
    assert out["message"].startswith("request: column 'country' has an unknown domain value 'jp' (row 1)")
