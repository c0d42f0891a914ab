"""The TrainJob manifest against the Kubeflow Trainer API types (kubeflow-trainer-api, the SDK's schema models)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from typing import Any

import pytest
from kubeflow_trainer_api import models as api
from pydantic import BaseModel

from mdctr.k8s import ClusterSettings
from mdctr.trainjob import (
    API_VERSION,
    RUNTIME,
    SETTINGS_ENV,
    STEP_MODULE,
    job_settings_from_json,
    job_settings_json,
    trainjob_spec,
)


def _unknown_keys(obj: Any, model: type[BaseModel], where: str = "") -> list[str]:
    """Keys of ``obj`` that ``model`` (recursively) does not define: the generated models drop them silently."""
    by_alias = {(f.alias or n): f for n, f in model.model_fields.items()}
    found = []
    for key, value in obj.items():
        field = by_alias.get(key)
        if field is None:
            found.append(f"{where}{key}")
            continue
        inner = field.annotation
        # unwrap Optional[X] / List[X] to the nested model, if any
        args = [inner]
        while args:
            t = args.pop()
            if (
                isinstance(t, type)
                and issubclass(t, BaseModel)
                and t.model_fields.get("actual_instance") is None
            ):
                if isinstance(value, dict):
                    found += _unknown_keys(value, t, f"{where}{key}.")
                for i, item in enumerate(value if isinstance(value, list) else []):
                    if isinstance(item, dict):
                        found += _unknown_keys(item, t, f"{where}{key}[{i}].")
                break
            args.extend(getattr(t, "__args__", ()))
    return found


def _spec(**kw: Any) -> dict[str, Any]:
    base = {
        "name": "mdctr-hamur-0",
        "model": "hamur",
        "prepared_uri": "/data/prepared",
        "output_uri": "/artifacts/hamur-0",
        "image": "ghcr.io/mdctr/mdctr:0.1.0-abc",
    }
    return trainjob_spec(**{**base, **kw})


def test_spec_validates_against_the_trainjob_api_and_has_no_unknown_field() -> None:
    spec = _spec(num_nodes=3, num_proc_per_node=2, namespace="team-a")
    job = api.TrainerV1alpha1TrainJob.from_dict(spec)
    assert _unknown_keys(spec, api.TrainerV1alpha1TrainJob) == []
    assert job.api_version == API_VERSION and job.kind == "TrainJob"
    assert job.spec.runtime_ref.name == RUNTIME
    trainer = job.spec.trainer
    assert (trainer.num_nodes, trainer.num_proc_per_node) == (3, 2)
    assert trainer.image == "ghcr.io/mdctr/mdctr:0.1.0-abc"
    assert trainer.command[:3] == ["torchrun", "--no-python", "mdctr"]
    args = trainer.args
    assert args[args.index("--prepared") + 1] == "/data/prepared"
    assert args[args.index("--out") + 1] == "/artifacts/hamur-0"
    env = {e.name: e for e in trainer.env}
    assert env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.name == "mdctr-s3"
    assert env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.optional is False
    assert env["MLFLOW_TRACKING_URI"].value_from.secret_key_ref.optional is False
    assert env["MLFLOW_TRACKING_PASSWORD"].value_from.secret_key_ref.optional is True
    assert job.metadata.namespace == "team-a"


def test_unknown_field_is_caught_by_the_schema_check() -> None:
    spec = _spec()
    spec["spec"]["trainer"]["numNode"] = 2  # a typo the generated models would silently drop
    assert _unknown_keys(spec, api.TrainerV1alpha1TrainJob) == ["spec.trainer.numNode"]
    spec = _spec()
    spec["spec"]["trainer"]["env"][0]["valueFrm"] = {}
    assert _unknown_keys(spec, api.TrainerV1alpha1TrainJob) == ["spec.trainer.env[0].valueFrm"]
    spec = _spec()
    spec["spec"]["trainer"]["numNodes"] = "2"  # wrong type: StrictInt
    with pytest.raises(ValueError, match=r"numNodes|num_nodes"):
        api.TrainerV1alpha1TrainJob.from_dict(spec)


def test_resources_and_gpu_come_from_cluster_settings() -> None:
    settings = ClusterSettings(gpu_accelerator="nvidia.com/gpu", gpu_count=4)
    job = api.TrainerV1alpha1TrainJob.from_dict(_spec(settings=settings))
    res = job.spec.trainer.resources_per_node
    limits = {k: v.actual_instance for k, v in res.limits.items()}
    assert limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "4"}
    assert {k: v.actual_instance for k, v in res.requests.items()} == {"cpu": "2", "memory": "4Gi"}


def test_default_image_is_this_codes_image(monkeypatch: pytest.MonkeyPatch) -> None:
    import mdctr

    # the code tag is cached per process: clear it so neither this sha nor an earlier one leaks across tests
    mdctr._code_tag.cache_clear()
    monkeypatch.setenv("MDCTR_GIT_SHA", "0123456789abcdef")
    monkeypatch.delenv("MDCTR_IMAGE_REPOSITORY", raising=False)
    try:
        spec = trainjob_spec(name="j", model="dnn", prepared_uri="/d", output_uri="/o")
        assert (
            spec["spec"]["trainer"]["image"] == f"{mdctr.IMAGE_REPOSITORY}:{mdctr.__version__}-0123456789ab"
        )
    finally:
        mdctr._code_tag.cache_clear()


def test_a_pipeline_entry_job_validates_and_runs_the_train_step_module() -> None:
    """The job a train_model task creates (train_backend=trainjob): same schema check, the step's module."""
    from mdctr.steps.train_model import TrainStepConfig

    config = json.dumps(dataclasses.asdict(TrainStepConfig(model_name="hamur", domain_source="mined")))
    spec = _spec(
        num_nodes=4,
        prepared_uri="s3://b/kfp/prepared",
        domains_uri="s3://b/kfp/domains",
        output_uri="s3://b/kfp/results.trainjob",
        step_config=config,
    )
    job = api.TrainerV1alpha1TrainJob.from_dict(spec)
    assert _unknown_keys(spec, api.TrainerV1alpha1TrainJob) == []
    assert job.spec.trainer.num_nodes == 4
    assert job.spec.trainer.command == ["torchrun", "--module", STEP_MODULE]
    assert job.spec.trainer.args == [
        "--prepared", "s3://b/kfp/prepared",
        "--domains", "s3://b/kfp/domains",
        "--out", "s3://b/kfp/results.trainjob",
        "--config", config,
    ]  # fmt: skip
    assert importlib.util.find_spec(STEP_MODULE) is not None  # the module the pods run exists
    with pytest.raises(ValueError, match="step_config must be a JSON object"):
        _spec(step_config="[1, 2]")


def test_job_settings_round_trip_and_bad_text_is_named() -> None:
    settings = ClusterSettings(gpu_accelerator="nvidia.com/gpu", gpu_count=2, mlflow_secret="ml")
    assert job_settings_from_json(job_settings_json(settings, "img:1")) == (settings, "img:1")
    assert job_settings_from_json("") == (ClusterSettings(), None)
    with pytest.raises(ValueError, match=f"{SETTINGS_ENV}: not the JSON"):
        job_settings_from_json('{"image": "x"}')


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "Bad_Name"}, "DNS-1035"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"streaming": "yes"}, "streaming"),
        ({"prepared_uri": ""}, "data and artifact"),
    ],
)
def test_bad_arguments_name_the_problem(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _spec(**kw)
