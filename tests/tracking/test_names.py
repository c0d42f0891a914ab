"""The registered model's name: one per dataset, derived from the schema name, valid as a Kubernetes name."""

from __future__ import annotations

import pytest

from mdctr.data.ml1m import SCHEMA as ML1M
from mdctr.serving.kserve import kserve_manifest
from mdctr.serving.server import DEFAULT_MODEL_URI
from mdctr.tracking.names import CHAMPION, registered_model_name


@pytest.mark.parametrize(
    ("schema_name", "expected"),
    [
        ("ml-1m", "mdctr-ml-1m"),
        ("epinions", "mdctr-epinions"),
        ("ali-ccp", "mdctr-ali-ccp"),
        ("My_Table.v2", "mdctr-my-table-v2"),  # a table dataset's name: lowercase, runs of others → '-'
        ("--shop--", "mdctr-shop"),
    ],
)
def test_the_name_derives_from_the_schema_name(schema_name: str, expected: str) -> None:
    name = registered_model_name(schema_name)
    assert name == expected
    # the same name is the InferenceService's, so it must be a valid Kubernetes name
    assert kserve_manifest(name=name, storage_uri="s3://b/m")["metadata"]["name"] == expected


def test_ml1m_registers_as_mdctr_ml_1m_and_is_served_by_default() -> None:
    assert registered_model_name(ML1M.name) == "mdctr-ml-1m"
    # serving sits below tracking and spells its default out: it must be ML-1M's champion
    assert f"models:/{registered_model_name(ML1M.name)}@{CHAMPION}" == DEFAULT_MODEL_URI


def test_unusable_names_are_refused_with_the_dataset_named() -> None:
    with pytest.raises(ValueError, match=r"dataset \(schema\) name '__' has no letter or digit"):
        registered_model_name("__")
    with pytest.raises(ValueError, match=r"derived from dataset 'x+' is 65 characters; at most 63"):
        registered_model_name("x" * 59)
