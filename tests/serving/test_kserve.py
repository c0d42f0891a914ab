"""The KServe InferenceService manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import mdctr
from mdctr.serving import kserve_manifest, write_manifest


def test_manifest_structure_and_yaml_round_trip(tmp_path: Path) -> None:
    m = kserve_manifest(
        name="mdctr-ctr",
        storage_uri="s3://mdctr/mlflow/1/models/m-abc/artifacts",
        namespace="ml",
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}},
        annotations={"mdctr.io/model-version": 3},
    )
    assert m["apiVersion"] == "serving.kserve.io/v1beta1" and m["kind"] == "InferenceService"
    assert m["metadata"] == {
        "name": "mdctr-ctr",
        "namespace": "ml",
        "annotations": {"mdctr.io/model-version": "3"},
    }
    model = m["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "mlflow"}
    assert model["storageUri"] == "s3://mdctr/mlflow/1/models/m-abc/artifacts"
    assert model["image"] == mdctr.IMAGE
    assert model["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    path = write_manifest(tmp_path / "k8s" / "isvc.yaml", m)
    assert yaml.safe_load(path.read_text()) == m
    assert path.read_text().startswith("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n")


def test_manifest_defaults_and_rejections() -> None:
    m = kserve_manifest(name="ctr", storage_uri="gs://b/m")
    assert "namespace" not in m["metadata"]
    assert m["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] == "4Gi"
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        kserve_manifest(name="MDCTR_ctr", storage_uri="s3://b/m")
    with pytest.raises(ValueError, match="MLflow URI"):
        kserve_manifest(name="ctr", storage_uri="models:/mdctr-ctr@champion")
