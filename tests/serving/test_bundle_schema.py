"""A bundle is checked when it is loaded (issue #22, item 4) and a request carries the hand-crafted domain only
when the model routes by it (item 7).

Each repro edits one file of a good bundle the way a hand edit, a truncated copy or a mismatched artifact would,
and expects the load to fail with one line naming the file and the field; `mdctr serve` on such a bundle exits
non-zero and never answers ready.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import torch

from mdctr.data.tensors import TensorData
from mdctr.domains.miner import MinerConfig, fit_miner
from mdctr.models import ModelInputs, build_model
from mdctr.serving import Predictor, save_bundle
from mdctr.serving.app import ScoringApp
from mdctr.serving.bundle import BUNDLE_FILE, ROUTING_FILE, SPEC_FILE, WEIGHTS_FILE
from mdctr.serving.bundle_schema import BundleError
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle
from mdctr.serving.request import RequestError
from mdctr.serving.server import ServerError, start_model_server

Edit = Callable[[dict[str, Any]], None]


def _copy(demo: DemoBundle, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(demo.path, target)
    return target


def _edit(bundle: Path, file: str, edit: Edit) -> None:
    """Apply ``edit`` to one JSON file of ``bundle`` (NaN/Infinity are written as JSON's non-standard
    literals, as a careless writer would)."""
    path = bundle / file
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _set(*keys: Any, value: Any) -> Edit:
    def edit(d: dict[str, Any]) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _append_vocab(d: dict[str, Any]) -> None:
    d["vocab"]["item_id"].append(10**6)  # one id more than the model's embedding table has rows for


def _refusal(bundle: Path) -> str:
    with pytest.raises(BundleError) as err:
        Predictor.load(bundle)
    message = str(err.value)
    assert "\n" not in message and "validation error" not in message  # one line, not pydantic's wall
    return message


# -- item 4: each repro of the issue, refused on load with the file and field named --------------------------
@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        # closed_columns as a string: before, "gender" became the columns g, e, n, …, and every request a 500
        (BUNDLE_FILE, _set("closed_columns", value="gender"), "bundle.json: closed_columns: Input should be a valid list; found 'gender'"),
        (BUNDLE_FILE, _set("closed_columns", value=["gender", "country"]), "bundle.json: closed_columns: 'country' is not a sparse column"),
        # before: ids past the end of item_id's rows silently read gender's rows, the last ones failed
        (SPEC_FILE, _append_vocab, "feature_spec.json: vocab.item_id: 200 values need 201 embedding rows"),
        (SPEC_FILE, _set("std", "age", value=0.0), "feature_spec.json: std.age: Input should be greater than 0; found 0.0"),
        (SPEC_FILE, _set("std", "age", value=-2.5), "feature_spec.json: std.age: Input should be greater than 0; found -2.5"),
        (SPEC_FILE, _set("mean", "age", value=math.nan), "feature_spec.json: mean.age: Input should be a finite number; found nan"),
        (SPEC_FILE, _set("std", "age", value=math.inf), "feature_spec.json: std.age: Input should be a finite number; found inf"),
        (BUNDLE_FILE, _set("width", value=math.nan), "bundle.json: width: Input should be a finite number"),
        (BUNDLE_FILE, _set("model_config", "dropout", value=math.nan), "bundle.json: model_config: dropout is nan; expected a finite number"),
        (BUNDLE_FILE, _set("version", value=2), "bundle.json: version: 2 is not a known bundle format version (this mdctr reads 1)"),
        (SPEC_FILE, _set("version", value="1"), "feature_spec.json: version: '1' is not a known feature spec format version"),
        # and the rest of the schema: types, unknown keys, cross-file facts
        (BUNDLE_FILE, _set("inputs", "vocab_sizes", value=[500, 200, 3.0]), "bundle.json: inputs.vocab_sizes[2]: Input should be a valid integer"),
        (BUNDLE_FILE, _set("domain_source", value="learned"), "bundle.json: domain_source: Input should be 'handcrafted', 'mined', 'none', 'random', 'binned' or 'mined-joint'"),
        (BUNDLE_FILE, _set("model_name", value="gpt"), "bundle.json: model_name: unknown model 'gpt'"),
        (BUNDLE_FILE, _set("model_config", "hiden", value=[8]), "bundle.json: model_config: model 'dnn' config: unknown key(s) ['hiden']"),
        (BUNDLE_FILE, _set("closed_colums", value=[]), "bundle.json: closed_colums: Extra inputs are not permitted"),
        (BUNDLE_FILE, _set("domain_source", value="handcrafted"), "bundle.json: inputs.num_domains: 1, but domain source 'handcrafted' routes by the 3 hand-crafted domains"),
        (BUNDLE_FILE, _set("domain_source", value="random"), "routing.json: missing, but bundle.json domain_source is 'random'"),
        (BUNDLE_FILE, _set("inputs", "num_dense", value=2), "bundle.json: inputs.num_dense: 2, but feature_spec.json has 1 dense column(s) ['age']"),
        (SPEC_FILE, _set("vocab", "gender", value=["F", 1]), "feature_spec.json: vocab.gender[1]: expected a string (kinds.gender is 'str'); found 1"),
        (SPEC_FILE, _set("kinds", "age", value="int"), "feature_spec.json: kinds: has entries for ['age', 'gender', 'item_id', 'user_id']; expected one per sparse column"),
        ("metrics.json", _set("overall", "auc", value=math.inf), "metrics.json: overall.auc: Input should be a finite number"),
        ("metrics.json", _set("per_domain", value=[{"domain": 7}]), "metrics.json: per_domain[0].domain: 7 is not a hand-crafted domain id (0..2)"),
    ],
)  # fmt: skip
def test_a_bad_bundle_is_refused_on_load_naming_file_and_field(
    demo: DemoBundle, tmp_path: Path, file: str, edit: Edit, expected: str
) -> None:
    bundle = _copy(demo, tmp_path)
    Predictor.load(bundle)  # the copy loads before the edit
    _edit(bundle, file, edit)
    assert expected in _refusal(bundle)


def test_a_duplicate_vocabulary_value_is_refused(demo: DemoBundle, tmp_path: Path) -> None:
    bundle = _copy(demo, tmp_path)
    _edit(bundle, SPEC_FILE, _set("vocab", "gender", value=["F", "F"]))
    _edit(bundle, BUNDLE_FILE, _set("inputs", "vocab_sizes", value=[500, 200, 3]))
    # the embedding table no longer fits either: the JSON problem is reported first, and alone
    assert "feature_spec.json: vocab.gender: value 'F' appears twice" in _refusal(bundle)


def test_weights_that_do_not_fit_or_are_not_finite_are_refused(demo: DemoBundle, tmp_path: Path) -> None:
    bundle = _copy(demo, tmp_path)
    # spec and bundle.json agree on a longer vocabulary, but model.pt's table was not grown with them
    _edit(bundle, SPEC_FILE, _append_vocab)
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    sizes = info["inputs"]["vocab_sizes"]
    _edit(bundle, BUNDLE_FILE, _set("inputs", "vocab_sizes", value=[sizes[0], sizes[1] + 1, sizes[2]]))
    rows = sum(sizes)
    message = _refusal(bundle)
    assert message.startswith(f"model.pt: embedding.table.weight: expected shape [{rows + 1}, 8]")
    assert f"found shape [{rows}, 8]" in message

    bundle = _copy(demo, tmp_path / "nan")
    state = torch.load(bundle / WEIGHTS_FILE, weights_only=True)
    key = next(k for k in state if k.endswith("weight") and k != "embedding.table.weight")
    state[key][0, 0] = float("nan")
    torch.save(state, bundle / WEIGHTS_FILE)
    assert _refusal(bundle) == f"model.pt: {key}: 1 non-finite value(s); a model's weights must be finite"

    bundle = _copy(demo, tmp_path / "hidden")
    _edit(bundle, BUNDLE_FILE, _set("model_config", "hidden", value=[32]))  # weights are for [16]
    assert _refusal(bundle).startswith(
        "model.pt: does not fit model 'dnn' as bundle.json describes it: size mismatch"
    )


def test_a_miner_that_does_not_fit_is_refused(demo: DemoBundle, tmp_path: Path) -> None:
    bundle = _star_bundle(demo, tmp_path, "mined")
    Predictor.load(bundle)
    _edit(bundle, "miner/model_inputs.json", _set("num_dense", value=2))
    assert _refusal(bundle).startswith("miner/model_inputs.json: vocab_sizes/num_dense: [")
    _edit(bundle, "miner/model_inputs.json", _set("num_dense", value=1))
    _edit(bundle, "miner/miner_config.json", _set("hidden", value=[16]))  # its weights are for [8]
    assert _refusal(bundle).startswith("miner/: the domain miner does not load: size mismatch for vqvae.")
    _edit(bundle, "miner/miner_config.json", _set("hiden", value=[8]))
    assert "miner/: the domain miner does not load:" in _refusal(bundle)
    assert "unknown key(s) ['hiden']" in _refusal(bundle)
    shutil.rmtree(bundle / "miner")
    assert _refusal(bundle).startswith(
        "miner/: missing, but bundle.json routes model 'star' by 'mined' domains"
    )


def test_not_json_or_a_missing_file_is_one_line(demo: DemoBundle, tmp_path: Path) -> None:
    bundle = _copy(demo, tmp_path)
    (bundle / SPEC_FILE).write_text('{"version": 1, "vocab": ')
    assert _refusal(bundle).startswith("feature_spec.json: not valid JSON")
    (bundle / SPEC_FILE).unlink()
    assert _refusal(bundle).startswith("feature_spec.json: missing from the bundle")
    (bundle / BUNDLE_FILE).write_text("[1, 2]")
    assert _refusal(bundle) == "bundle.json: expected a JSON object, found [1, 2]"


def test_a_control_bundle_checks_its_routing_file(demo: DemoBundle, tmp_path: Path) -> None:
    pred = Predictor.load(demo.path)
    model = build_model("star", ModelInputs(demo.spec.vocab_sizes, 1, 3, 8))
    state = {"source": "binned", "column": "age", "num_domains": 3, "edges": [-0.5, 0.5], "counts": []}
    kwargs = dict(model=model, model_name="star", model_config={}, width=1.0, spec=demo.spec)
    bundle = save_bundle(tmp_path / "binned", domain_source="binned", routing_state=state, **kwargs)
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(30)
    assert Predictor.load(bundle).predict(rows).shape == (30,)
    assert pred.info.domain_source == "none"
    _edit(bundle, ROUTING_FILE, _set("edges", value=[0.5, -0.5]))
    assert "routing.json: edges: expected 2 increasing bin edges for 3 domains" in _refusal(bundle)
    _edit(bundle, ROUTING_FILE, _set("edges", value=[-0.5, math.nan]))
    assert "routing.json: edges[1]: Input should be a finite number" in _refusal(bundle)
    _edit(bundle, ROUTING_FILE, _set("edges", value=[-0.5, 0.5]))
    _edit(bundle, ROUTING_FILE, _set("num_domains", value=4))
    assert "routing.json: num_domains: 4, but the model was built for 3" in _refusal(bundle)


def test_save_bundle_refuses_what_load_would_and_keeps_the_old_bundle(
    demo: DemoBundle, tmp_path: Path
) -> None:
    target = _copy(demo, tmp_path)
    before = Predictor.load(target).predict(demo.table[list(DEMO_SCHEMA.serving_columns)].head(5))
    pred = Predictor.load(demo.path)
    with pytest.raises(
        BundleError, match=r"refusing to write the bundle .*inputs\.num_domains: 1, but domain"
    ):
        save_bundle(
            target,
            model=pred.model,
            model_name="dnn",
            model_config=pred.info.model_config,
            width=1.0,
            spec=demo.spec,
            domain_source="handcrafted",  # the model was built for 1 domain, the data has 3
        )
    after = Predictor.load(target).predict(demo.table[list(DEMO_SCHEMA.serving_columns)].head(5))
    np.testing.assert_array_equal(after, before)


@pytest.mark.integration
def test_mdctr_serve_exits_nonzero_on_a_bad_bundle_and_never_says_ready(
    demo: DemoBundle, tmp_path: Path
) -> None:
    bundle = _copy(demo, tmp_path)
    _edit(bundle, BUNDLE_FILE, _set("closed_columns", value="gender"))
    with pytest.raises(ServerError, match="server exited with status 2 before"):
        start_model_server(str(bundle), log_dir=tmp_path / "log", timeout=120)
    log = (tmp_path / "log" / "server.log").read_text()
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1] == (
        f"error: {bundle}: bundle.json: closed_columns: Input should be a valid list; found 'gender'"
    )


# -- item 7: the domain column is required only by a model routed by it ------------------------------------
def _star_bundle(demo: DemoBundle, tmp_path: Path, source: str) -> Path:
    """An (untrained) STAR bundle, whose towers are chosen by the routing domain: by the 3 hand-crafted domains,
    or by the 3 codes of an external miner."""
    torch.manual_seed(0)
    model = build_model("star", ModelInputs(demo.spec.vocab_sizes, 1, 3, 8))
    miner = None
    if source == "mined":  # fitted briefly, so that its codes differ between rows
        train = TensorData.from_frame(demo.spec.encode_frame(demo.table), DEMO_SCHEMA)
        config = MinerConfig(
            num_codes=3, hidden=(8,), head_hidden=(8,), embed_dim=4, epochs=1, batch_size=256
        )
        miner = fit_miner(train, ModelInputs(demo.spec.vocab_sizes, 1, 1, 8), config)
    return save_bundle(
        tmp_path / source,
        model=model,
        model_name="star",
        model_config={},
        width=1.0,
        spec=demo.spec,
        domain_source=source,
        miner=miner,
    )


def _serve_json(app: ScoringApp, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request through the ASGI app in this process → (status, parsed JSON body)."""
    raw = orjson.dumps(body) if body is not None else b""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body_bytes = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body_bytes)


def _v2(df: pd.DataFrame) -> dict[str, Any]:
    types = {"user_id": "INT64", "item_id": "INT64", "gender": "BYTES", "age": "FP64", "domain": "INT64"}
    return {
        "inputs": [
            {"name": c, "shape": [len(df)], "datatype": types[c], "data": df[c].tolist()} for c in df.columns
        ]
    }


def test_a_mined_model_scores_requests_without_the_domain_column(demo: DemoBundle, tmp_path: Path) -> None:
    pred = Predictor.load(_star_bundle(demo, tmp_path, "mined"))
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(40).reset_index(drop=True)
    features = rows.drop(columns=["domain"])
    with_domain = pred.predict(rows)
    without = pred.predict(features)
    np.testing.assert_array_equal(without, with_domain)  # routed by the miner's codes, not the column
    assert len(set(pred.encode(features).domain.tolist())) > 1  # and the towers really differ by row
    assert pred.required_columns == DEMO_SCHEMA.features
    # sent, the column is still checked
    with pytest.raises(RequestError, match=r"'domain' must be one of 0\.\.2"):
        pred.predict(rows.assign(domain=7))
    # every wire format takes the request without it; /v2 metadata says the input is optional
    app = ScoringApp(pred, model_name="m")
    status, body = _serve_json(app, "POST", "/v2/models/m/infer", _v2(features))
    assert status == 200, body
    np.testing.assert_array_equal(np.asarray(body["outputs"][0]["data"]), with_domain)
    split = {"dataframe_split": json.loads(features.to_json(orient="split", index=False))}
    status, body = _serve_json(app, "POST", "/invocations", split)
    assert status == 200, body
    np.testing.assert_array_equal(np.asarray(body["predictions"]), with_domain)
    records = {"dataframe_records": json.loads(features.head(3).to_json(orient="records"))}
    status, body = _serve_json(app, "POST", "/invocations", records)
    assert status == 200, body
    np.testing.assert_array_equal(np.asarray(body["predictions"]), with_domain[:3])
    status, meta = _serve_json(app, "GET", "/v2/models/m")
    assert status == 200
    optional = {i["name"]: i.get("optional", False) for i in meta["inputs"]}
    assert optional == {"user_id": False, "item_id": False, "gender": False, "age": False, "domain": True}


@pytest.mark.parametrize("source", ["none", "random"])
def test_models_not_routed_by_the_hand_crafted_domain_do_not_need_it(
    demo: DemoBundle, tmp_path: Path, source: str
) -> None:
    if source == "none":
        bundle = demo.path
    else:
        model = build_model("star", ModelInputs(demo.spec.vocab_sizes, 1, 3, 8))
        state = {"source": "random", "column": "user_id", "num_domains": 3}
        bundle = save_bundle(
            tmp_path / "random", model=model, model_name="star", model_config={}, width=1.0, spec=demo.spec,
            domain_source="random", routing_state=state,
        )  # fmt: skip
    pred = Predictor.load(bundle)
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(20)
    np.testing.assert_array_equal(pred.predict(rows.drop(columns=["domain"])), pred.predict(rows))


def test_a_handcrafted_model_still_refuses_a_request_without_the_domain(
    demo: DemoBundle, tmp_path: Path
) -> None:
    pred = Predictor.load(_star_bundle(demo, tmp_path, "handcrafted"))
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(10)
    assert pred.predict(rows).shape == (10,)
    assert pred.required_columns == DEMO_SCHEMA.serving_columns
    with pytest.raises(RequestError, match=re.escape("missing column(s) ['domain']")):
        pred.predict(rows.drop(columns=["domain"]))
    app = ScoringApp(pred, model_name="m")
    features = rows.drop(columns=["domain"])
    for path, body in [
        ("/v2/models/m/infer", _v2(features)),
        ("/invocations", {"dataframe_split": json.loads(features.to_json(orient="split", index=False))}),
        ("/invocations", {"dataframe_records": json.loads(features.to_json(orient="records"))}),
    ]:
        status, answer = _serve_json(app, "POST", path, body)
        assert status == 400 and "'domain'" in json.dumps(answer), (path, answer)
    status, meta = _serve_json(app, "GET", "/v2/models/m")
    assert not any(i.get("optional") for i in meta["inputs"])
