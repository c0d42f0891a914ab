"""The bundle round trip, strict request checks and domain routing of the Predictor (no MLflow involved)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mdctr.domains.miner import DomainMiner, MinerConfig
from mdctr.models import build_model
from mdctr.schema import SchemaError
from mdctr.serving import Predictor, read_metrics, save_bundle
from mdctr.serving.bundle import BUNDLE_FILE
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle


def _rows(demo: DemoBundle, n: int = 20) -> pd.DataFrame:
    return demo.table[list(DEMO_SCHEMA.serving_columns)].head(n).reset_index(drop=True)


def test_predictions_match_the_model_on_encoded_rows(demo: DemoBundle) -> None:
    pred = Predictor.load(demo.path)
    rows = _rows(demo)
    out = pred.predict(rows)
    assert out.dtype == np.float64 and out.shape == (len(rows),)
    assert np.all((out > 0) & (out < 1))
    data = pred.encode(rows)
    with torch.no_grad():
        expected = torch.sigmoid(pred.model(data.batch(0, len(data)))).double().numpy()
    np.testing.assert_array_equal(out, expected)
    assert not pred.model.training
    # the label is not needed, extra columns are ignored, and a reload predicts identically
    np.testing.assert_array_equal(Predictor.load(demo.path).predict(rows.assign(extra=1)), out)


def test_bundle_records_metrics_and_unseen_policy(demo: DemoBundle) -> None:
    info = json.loads((demo.path / BUNDLE_FILE).read_text())
    assert info["closed_columns"] == ["gender"]  # 2 values: closed; ids: open (OOV)
    assert info["model_name"] == "dnn" and info["domain_source"] == "none"
    m = read_metrics(demo.path)
    assert m["overall"]["auc"] == pytest.approx(0.70)
    assert [d["domain"] for d in m["per_domain"]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns=["age"]), "missing column(s) ['age']"),
        (lambda df: df.assign(user_id=df["user_id"].astype(str)), "'user_id' expects integer ids"),
        (lambda df: df.assign(age="old"), "'age' expects numbers"),
        (lambda df: df.assign(gender=1), "'gender' expects strings"),
        (lambda df: df.assign(gender="X"), "'gender' has 20 unknown value(s), e.g. 'X'"),
        (lambda df: df.assign(domain=7), "'domain' must be one of 0..2"),
        (lambda df: df.head(0), "no rows"),
    ],
)
def test_bad_requests_raise_schema_errors(demo: DemoBundle, change, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        Predictor.load(demo.path).predict(change(_rows(demo)))
    assert message in str(err.value)


def test_unseen_ids_of_open_columns_use_the_oov_bucket(demo: DemoBundle) -> None:
    pred = Predictor.load(demo.path)
    rows = _rows(demo, 5)
    a = pred.predict(rows.assign(user_id=10**9))
    b = pred.predict(rows.assign(user_id=10**9 + 1))
    np.testing.assert_array_equal(a, b)  # both are the OOV index
    assert pred.encode(rows.assign(user_id=10**9)).sparse[:, 0].eq(0).all()


def test_closed_columns_can_be_chosen(demo: DemoBundle, tmp_path: Path) -> None:
    pred = Predictor.load(demo.path)
    path = save_bundle(
        tmp_path / "open",
        model=pred.model,
        model_name="dnn",
        model_config=pred.info.model_config,
        width=1.0,
        spec=demo.spec,
        domain_source="none",
        closed_columns=(),
    )
    out = Predictor.load(path).predict(_rows(demo, 3).assign(gender="X"))
    assert out.shape == (3,) and np.isfinite(out).all()


def test_domain_sources_route_as_recorded(demo: DemoBundle, tmp_path: Path) -> None:
    pred = Predictor.load(demo.path)
    rows = _rows(demo)
    assert pred.encode(rows).domain.eq(0).all()  # source "none": one domain
    kwargs = dict(
        model=pred.model, model_name="dnn", model_config=pred.info.model_config, width=1.0, spec=demo.spec
    )
    # routed by the 3 hand-crafted domains, the model is built for 3 (the dnn's weights do not depend on it)
    three = build_model("dnn", replace(pred.info.inputs, num_domains=3), config=pred.info.model_config)
    three.load_state_dict(pred.model.state_dict())
    hand = Predictor.load(
        save_bundle(tmp_path / "hand", domain_source="handcrafted", **{**kwargs, "model": three})
    )
    assert hand.encode(rows).domain.tolist() == rows["domain"].tolist()

    torch.manual_seed(0)
    miner = DomainMiner(
        pred.info.inputs, MinerConfig(num_codes=3, hidden=(8,), head_hidden=(8,), embed_dim=4)
    )
    mined = Predictor.load(save_bundle(tmp_path / "mined", domain_source="mined", miner=miner, **kwargs))
    data = hand.encode(rows)
    expected = miner.eval().assign(data)
    assert mined.encode(rows).domain.tolist() == expected.tolist()
    assert mined.encode(rows).handcrafted.tolist() == rows["domain"].tolist()
    np.testing.assert_array_equal(mined.predict(rows), pred.predict(rows))  # dnn ignores the domain


def test_save_bundle_rejects_inconsistent_arguments_and_keeps_old_bundle(
    demo: DemoBundle, tmp_path: Path
) -> None:
    target = tmp_path / "b"
    shutil.copytree(demo.path, target)
    model = build_model("dnn", Predictor.load(target).info.inputs, config={"hidden": [16]})
    kwargs = dict(model=model, model_name="dnn", model_config={"hidden": [16]}, width=1.0, spec=demo.spec)
    with pytest.raises(ValueError, match="needs external domain miner"):
        save_bundle(target, domain_source="mined", **kwargs)
    with pytest.raises(ValueError, match="unknown domain source"):
        save_bundle(target, domain_source="learned", **kwargs)
    with pytest.raises(ValueError, match="not sparse columns"):
        save_bundle(target, domain_source="none", closed_columns=("age",), **kwargs)
    np.testing.assert_array_equal(
        Predictor.load(target).predict(_rows(demo)), Predictor.load(demo.path).predict(_rows(demo))
    )


def test_self_mining_model_is_bundled_without_an_external_miner(demo: DemoBundle, tmp_path: Path) -> None:
    inputs = Predictor.load(demo.path).info.inputs
    config = {"num_codes": 3, "shared": [8], "specific": [8]}
    torch.manual_seed(0)
    model = build_model("adaptive2", inputs, config=config).eval()
    kwargs = dict(model=model, model_name="adaptive2", model_config=config, width=1.0, spec=demo.spec)
    miner = DomainMiner(inputs, MinerConfig(num_codes=3, hidden=(8,), head_hidden=(8,), embed_dim=4))
    with pytest.raises(ValueError, match="takes no external domain miner"):
        save_bundle(tmp_path / "a2", domain_source="mined", miner=miner, **kwargs)
    path = save_bundle(tmp_path / "a2", domain_source="mined", **kwargs)
    assert not (path / "miner").exists()
    served = Predictor.load(path)
    rows = _rows(demo)
    data = served.encode(rows)
    with torch.no_grad():
        expected = torch.sigmoid(model(data.batch(0, len(data)))).double().numpy()
    np.testing.assert_array_equal(served.predict(rows), expected)


def test_lookup_encoder_equals_encode_frame(demo: DemoBundle) -> None:
    """The serving fast path encodes exactly as training's pandas encoder (ids seen and unseen, NaN dense)."""
    pred = Predictor.load(demo.path)
    rows = _rows(demo, 200).copy()
    rows.loc[::7, "user_id"] = 10**9  # unseen ids → OOV
    rows.loc[::5, "age"] = np.nan  # missing dense → train mean
    data = pred.encode(rows)
    enc = demo.spec.encode_frame(rows, require_label=False)
    np.testing.assert_array_equal(data.sparse.numpy(), enc[list(DEMO_SCHEMA.sparse)].to_numpy())
    np.testing.assert_array_equal(data.dense.numpy(), enc[list(DEMO_SCHEMA.dense)].to_numpy())
    np.testing.assert_array_equal(data.handcrafted.numpy(), enc[DEMO_SCHEMA.domain].to_numpy())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.assign(user_id=df["user_id"].astype(float) + 0.9), "'user_id' expects integer ids"),
        (lambda df: df.assign(user_id=[True] * len(df)), "'user_id' expects integer ids"),
        (lambda df: df.assign(age=np.inf), "'age' has 20 value(s) out of range"),
        (lambda df: df.assign(age=1e308), "'age' has 20 value(s) out of range"),
        (lambda df: df.assign(gender=None), "'gender' expects strings; found None"),
    ],
)
def test_offline_predict_is_as_strict_as_the_server(demo: DemoBundle, change, message: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        Predictor.load(demo.path).predict(change(_rows(demo)))


def test_offline_scoring_has_no_request_row_limit(demo: DemoBundle) -> None:
    """Offline scoring (the MLflow pyfunc, the gate's validation re-score) takes any number of rows; only the
    production server bounds a request (it loads the predictor with its limit)."""
    from mdctr.serving.request import DEFAULT_MAX_ROWS, RequestError

    cols = list(DEMO_SCHEMA.serving_columns)
    rows = (
        demo.table[cols].sample(DEFAULT_MAX_ROWS + 500, replace=True, random_state=0).reset_index(drop=True)
    )
    offline = Predictor.load(demo.path)
    probs = offline.predict(rows)
    assert probs.shape == (len(rows),) and np.all((probs > 0) & (probs < 1))
    # the same rows score the same in a small batch (to float rounding: BLAS blocks a batch by its size)
    np.testing.assert_allclose(probs[:100], offline.predict(rows.head(100)), rtol=1e-5, atol=1e-7)
    with pytest.raises(RequestError, match=f"{len(rows)} rows exceed the limit of {DEFAULT_MAX_ROWS}"):
        Predictor.load(demo.path, max_rows=DEFAULT_MAX_ROWS).predict(rows)
