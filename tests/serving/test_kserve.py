"""The KServe InferenceService manifest: structure, and a check against KServe's own API types.

The schema check deserialises the manifest with the generated models of KServe's Python SDK (``kserve``
0.21.0, ``kserve.models``: one class per CRD type with ``openapi_types`` / ``attribute_map``) and the
Kubernetes client's models for the core types (``V1Container``, ``V1ObjectMeta``…): an unknown field, a wrong
type or a missing required field fails. The SDK is installed without its dependencies (``make setup``: its
pins, e.g. ``pandas<3``, clash with the lock) and its package ``__init__`` (which imports its model server)
is bypassed: only ``kserve.configuration`` and ``kserve.models`` are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

import mdctr
from mdctr.serving import kserve_manifest, write_manifest
from mdctr.serving.kserve import CONTAINER_NAME, MEASURED_LIVE_UNDER_LOAD_S, MODEL_MOUNT, serve_image

STORAGE = "s3://mdctr/mlflow/1/models/m-abc/artifacts"


@pytest.fixture(scope="module")
def kserve_models() -> types.ModuleType:
    spec = importlib.util.find_spec("kserve")
    assert spec is not None and spec.submodule_search_locations, (
        "the kserve SDK is not installed: make setup installs kserve==0.21.0 with --no-deps"
    )
    saved = {k: v for k, v in sys.modules.items() if k == "kserve" or k.startswith("kserve.")}
    pkg = types.ModuleType("kserve")
    pkg.__path__ = list(spec.submodule_search_locations)  # a bare package: its __init__ is not run
    sys.modules["kserve"] = pkg
    try:
        return importlib.import_module("kserve.models")
    finally:
        for k in [k for k in sys.modules if k == "kserve" or k.startswith("kserve.")]:
            if k != "kserve.models" and not k.startswith("kserve.models."):
                sys.modules.pop(k)
        sys.modules.update(saved)


def _build(value: Any, type_name: str, path: str, models: types.ModuleType) -> Any:
    """Deserialise ``value`` as the OpenAPI type ``type_name``; raise ValueError naming ``path`` on a mismatch."""
    if m := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list")
        return [_build(v, m.group(1), f"{path}[{i}]", models) for i, v in enumerate(value)]
    if m := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{path}: expected a map with string keys")
        return {k: _build(v, m.group(1), f"{path}.{k}", models) for k, v in value.items()}
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if type_name in primitive:
        if not isinstance(value, primitive[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise ValueError(f"{path}: expected {type_name}, got {value!r}")
        return value
    if type_name == "object":
        return value
    cls = getattr(models, type_name, None) or getattr(kubernetes.client, type_name, None)
    if cls is None:
        raise ValueError(f"{path}: unknown API type {type_name}")
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected an object of type {type_name}")
    by_json = {v: k for k, v in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(by_json))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown} for {type_name}")
    kwargs = {
        by_json[k]: _build(v, cls.openapi_types[by_json[k]], f"{path}.{k}", models) for k, v in value.items()
    }
    return cls(**kwargs)  # the generated setters reject a missing required field


def _check(manifest: dict[str, Any], models: types.ModuleType) -> Any:
    return _build(manifest, "V1beta1InferenceService", "InferenceService", models)


def test_manifest_is_a_custom_predictor_on_the_serve_image(tmp_path: Path) -> None:
    m = kserve_manifest(
        name="mdctr-ml-1m",
        storage_uri=STORAGE,
        namespace="ml",
        service_account="mdctr-s3",
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}},
        annotations={"mdctr.io/model-version": 3},
    )
    assert m["apiVersion"] == "serving.kserve.io/v1beta1" and m["kind"] == "InferenceService"
    assert m["metadata"] == {
        "name": "mdctr-ml-1m",
        "namespace": "ml",
        "annotations": {"mdctr.io/model-version": "3"},
    }
    predictor = m["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "mdctr-s3" and "model" not in predictor
    (c,) = predictor["containers"]
    assert c["name"] == CONTAINER_NAME and c["image"] == serve_image() and c["image"].startswith(mdctr.IMAGE)
    env = {e["name"]: e["value"] for e in c["env"]}
    # STORAGE_URI makes KServe's storage initializer download the model to /mnt/models; the serve image's
    # command serves $MODEL_URI on $PORT under the v2 name $MDCTR_MODEL_NAME
    assert env["STORAGE_URI"] == STORAGE and env["MODEL_URI"] == MODEL_MOUNT
    assert env["PORT"] == "8080" and c["ports"][0]["containerPort"] == 8080
    assert env["MDCTR_MODEL_NAME"] == "mdctr-ml-1m"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # Kubernetes' default 1 s would fail a busy server: /live took up to 1.7 s under 10k-row load
    assert c["readinessProbe"]["timeoutSeconds"] >= 2 * MEASURED_LIVE_UNDER_LOAD_S
    assert c["livenessProbe"]["timeoutSeconds"] >= 2 * c["readinessProbe"]["timeoutSeconds"]
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    path = write_manifest(tmp_path / "k8s" / "isvc.yaml", m)
    assert yaml.safe_load(path.read_text()) == m


def test_manifest_passes_the_kserve_schema(kserve_models: types.ModuleType, tmp_path: Path) -> None:
    m = kserve_manifest(name="mdctr-ml-1m", storage_uri=STORAGE, namespace="ml", annotations={"a": "b"})
    isvc = _check(yaml.safe_load(write_manifest(tmp_path / "isvc.yaml", m).read_text()), kserve_models)
    assert isvc.spec.predictor.service_account_name == "mdctr-serving"
    assert isvc.spec.predictor.containers[0].env[0].name == "STORAGE_URI"


def test_request_log_manifest_passes_the_kserve_schema(kserve_models: types.ModuleType) -> None:
    """``request_log``: the serve container's ``MDCTR_SERVE_LOG``/``_SAMPLE`` (what ``mdctr serve --log`` reads)."""
    m = kserve_manifest(
        name="mdctr-ml-1m", storage_uri=STORAGE, request_log="s3://logs/ml-1m", request_log_sample=0.25
    )
    env = {e.name: e.value for e in _check(m, kserve_models).spec.predictor.containers[0].env}
    assert env["MDCTR_SERVE_LOG"] == "s3://logs/ml-1m" and env["MDCTR_SERVE_LOG_SAMPLE"] == "0.25"
    plain = kserve_manifest(name="mdctr-ml-1m", storage_uri=STORAGE)["spec"]["predictor"]["containers"][0][
        "env"
    ]
    assert not any(e["name"].startswith("MDCTR_SERVE_LOG") for e in plain)
    with pytest.raises(Exception, match="sample rate must be in"):
        kserve_manifest(
            name="mdctr-ml-1m", storage_uri=STORAGE, request_log="s3://logs/x", request_log_sample=2.0
        )


def test_canary_manifest_passes_the_kserve_schema(kserve_models: types.ModuleType) -> None:
    """KServe v1beta1 canary: the predictor spec holds the new model and ``canaryTrafficPercent``."""
    m = kserve_manifest(name="mdctr-ml-1m", storage_uri=STORAGE, canary_traffic_percent=10)
    isvc = _check(m, kserve_models)
    assert isvc.spec.predictor.canary_traffic_percent == 10
    assert (
        "canaryTrafficPercent"
        not in kserve_manifest(name="mdctr-ml-1m", storage_uri=STORAGE)["spec"]["predictor"]
    )
    # control: the schema check rejects a percent of the wrong type, and the builder any percent outside 0-100
    m["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    with pytest.raises(ValueError, match="canaryTrafficPercent: expected int"):
        _check(m, kserve_models)
    for bad in (101, -1, True, 12.5):
        with pytest.raises(ValueError, match="canaryTrafficPercent must be an integer from 0 to 100"):
            kserve_manifest(name="mdctr-ml-1m", storage_uri=STORAGE, canary_traffic_percent=bad)


@pytest.mark.integration
def test_rollout_manifests_of_a_canary_pass_the_kserve_schema(
    demo, tmp_path: Path, kserve_models: types.ModuleType
) -> None:
    """The manifests ``mdctr models promote --canary``/``--finish``/``rollback`` write (through
    :func:`mdctr.steps.promote_model.write_rollout_manifest`) for a real store's versions deserialise into
    KServe's types, and say which model takes which share."""
    from mdctr import tracking
    from mdctr.steps.promote_model import write_rollout_manifest

    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run_id = tracking.log_training_run(
        uri,
        tracking.start_parent_run(uri, run_name="kserve"),
        run_name="dnn",
        params={},
        system_metrics=False,
    )
    v1, v2 = (
        tracking.register_bundle(uri, demo.path, run_id=run_id, input_example=demo.table) for _ in range(2)
    )
    storage = {rv.version: tracking.model_storage_uri(uri, rv.version, name=rv.name) for rv in (v1, v2)}
    written = {}
    for label, rollout in (
        ("canary", tracking.Rollout(v1.version, v2.version, 25)),
        ("alone", tracking.Rollout(v2.version)),
    ):
        path, spec_storage = write_rollout_manifest(
            tmp_path / f"{label}.yaml", rollout, name=v1.name, tracking_uri=uri, namespace="ml"
        )
        written[label] = _check(yaml.safe_load(path.read_text()), kserve_models)
        assert spec_storage == storage[v2.version]
    canary, alone = written["canary"], written["alone"]
    assert canary.spec.predictor.canary_traffic_percent == 25
    assert canary.spec.predictor.containers[0].env[0].value == storage[v2.version]
    assert canary.metadata.annotations["mdctr/champion-storage-uri"] == storage[v1.version]
    assert canary.metadata.annotations["mdctr/canary-version"] == v2.version
    assert alone.spec.predictor.canary_traffic_percent is None
    assert alone.metadata.annotations["mdctr/champion-version"] == v2.version


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            lambda m: m["spec"]["predictor"].update(serviceAcountName="x"),
            "unknown field(s) ['serviceAcountName']",
        ),
        (
            lambda m: m["spec"]["predictor"]["containers"][0].update(storageUri="s3://x"),
            "unknown field(s) ['storageUri']",
        ),
        (lambda m: m["spec"]["predictor"]["containers"][0].pop("name"), "name"),
        (
            lambda m: m["spec"]["predictor"]["containers"][0]["ports"][0].update(containerPort="8080"),
            "expected int",
        ),
        (lambda m: m["spec"]["predictor"].update(minReplicas=True), "expected int"),
    ],
)
def test_schema_check_catches_invalid_manifests(kserve_models: types.ModuleType, change, error: str) -> None:
    """Control: the check fails on a misspelt field, a missing required field and a wrong type."""
    m = kserve_manifest(name="mdctr-ml-1m", storage_uri=STORAGE)
    change(m)
    with pytest.raises(ValueError, match=re.escape(error)):
        _check(m, kserve_models)


def test_manifest_rejections() -> None:
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        kserve_manifest(name="MDCTR_ctr", storage_uri="s3://b/m")
    with pytest.raises(ValueError, match="MLflow URI"):
        kserve_manifest(name="ctr", storage_uri="models:/mdctr-ml-1m@champion")
    with pytest.raises(ValueError, match="service account"):
        kserve_manifest(name="ctr", storage_uri="s3://b/m", service_account="Bad_SA")


@pytest.mark.integration
def test_the_manifest_container_serves_the_registered_model_over_v2(demo, tmp_path: Path) -> None:
    """The custom predictor as KServe runs it, without a cluster: the storage initializer's download of
    ``STORAGE_URI`` into /mnt/models (a copy of the registered version's artifact location), then the serve
    image's command with the container's environment; the v2 answer equals the offline predictions."""
    import json
    import os
    import shutil
    import subprocess
    import urllib.parse

    import numpy as np
    import requests

    from mdctr import tracking
    from mdctr.serving import Predictor
    from mdctr.serving.demo import DEMO_SCHEMA
    from mdctr.serving.server import free_port, venv_env, wait_healthy

    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = tracking.start_parent_run(uri, run_name="kserve")
    run_id = tracking.log_training_run(uri, parent, run_name="dnn", params={}, system_metrics=False)
    rv = tracking.register_bundle(uri, demo.path, run_id=run_id, input_example=demo.table)
    storage = tracking.model_storage_uri(uri, rv.version, name=rv.name)
    mount = tmp_path / "mnt" / "models"
    shutil.copytree(urllib.parse.urlparse(storage).path, mount)  # what the storage initializer does

    port = free_port()
    request_log = tmp_path / "requests"  # the pods' --log, from the manifest's env (a bucket on a cluster)
    m = kserve_manifest(
        name="ctr-svc", storage_uri="s3://bucket/" + storage.rsplit("/", 3)[-3], request_log=str(request_log)
    )
    (c,) = m["spec"]["predictor"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]} | {"MODEL_URI": str(mount), "PORT": str(port)}
    # the serve target's command (Dockerfile), with the container's environment
    cmd = ["sh", "-c", 'exec mdctr serve --model-uri "$MODEL_URI" --host 0.0.0.0 --port "$PORT"']
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=venv_env(env), start_new_session=True
        )
    try:
        wait_healthy(
            f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}",
            timeout=120,
            proc=proc,
            log_path=log,
        )
        rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(40)
        types_ = {"user_id": "INT64", "item_id": "INT64", "gender": "BYTES", "age": "FP64", "domain": "INT64"}
        body = {
            "inputs": [
                {"name": k, "shape": [40], "datatype": t, "data": rows[k].tolist()} for k, t in types_.items()
            ]
        }
        r = requests.post(f"http://127.0.0.1:{port}/v2/models/ctr-svc/infer", data=json.dumps(body),
                          headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["model_name"] == "ctr-svc"
        served = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float64)
        np.testing.assert_array_equal(served, Predictor.load(demo.path).predict(rows))
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    # SIGTERM flushed the request log the manifest turned on: one logged row per scored row, same predictions
    import pandas as pd

    logged = pd.concat([pd.read_parquet(p) for p in sorted(request_log.rglob("*.parquet"))])
    np.testing.assert_array_equal(np.sort(logged["mdctr_prediction"].to_numpy()), np.sort(served))
