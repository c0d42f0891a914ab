"""The compiled pipeline: compiles with no environment, has the expected tasks and edges, runs every task in
the project's immutable image, retries/caches/closes the run as a cluster needs, and carries the Kubernetes
settings (secrets, pull policy, resources, optional GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import mdctr
from mdctr.k8s import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS, ClusterSettings
from mdctr.pipeline import PROJECT_ROOT, compile_pipeline

STEP_TASKS = {
    "fetch-data",
    "start-run",
    "validate-data",
    "prepare-data",
    "mine-domains",
    "plan-runs",
    "evaluate",
    "register-model",
}


def _load(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, pipeline_spec_pb2.PlatformSpec]:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "expected the pipeline spec and the platform spec"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    return spec, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled by the CLI in a process with an empty environment (only PATH): CI's contract."""
    out = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    res = subprocess.run(
        [str(Path(sys.executable).parent / "mdctr"), "pipeline", "compile", "--out", str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def specs(compiled: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, pipeline_spec_pb2.PlatformSpec]:
    return _load(compiled)


def _root_tasks(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, Any]:
    """The DAG's step tasks: those inside the exit handler (the root holds it and the exit task)."""
    return _component_tasks(spec, "comp-exit-handler")


def _component_tasks(spec: pipeline_spec_pb2.PipelineSpec, prefix: str) -> dict[str, Any]:
    """Tasks of the first sub-DAG component whose name starts with ``prefix`` (loop or condition body)."""
    for name, comp in spec.components.items():
        if name.startswith(prefix) and comp.HasField("dag"):
            return dict(comp.dag.tasks)
    raise AssertionError(f"no component {prefix}* in {sorted(spec.components)}")


def test_root_has_every_step_a_loop_and_a_condition(specs: Any) -> None:
    spec, _ = specs
    tasks = _root_tasks(spec)
    assert set(tasks) >= STEP_TASKS
    assert any(t.startswith("for-loop") for t in tasks), sorted(tasks)
    assert any(t.startswith("condition") for t in tasks), sorted(tasks)
    assert spec.pipeline_info.name == "mdctr-training"


def test_edges_follow_the_data_flow(specs: Any) -> None:
    spec, _ = specs
    tasks = _root_tasks(spec)
    deps = {name: set(t.dependent_tasks) for name, t in tasks.items()}
    loop = next(t for t in tasks if t.startswith("for-loop"))
    cond = next(t for t in tasks if t.startswith("condition"))
    assert "fetch-data" in deps["validate-data"]
    assert {"validate-data", "fetch-data"} <= deps["prepare-data"]
    assert "prepare-data" in deps["mine-domains"]
    assert {"plan-runs", "mine-domains", "prepare-data"} <= deps[loop]
    assert loop in deps["evaluate"]
    assert "evaluate" in deps["register-model"]
    assert "register-model" in deps[cond]
    # the loop iterates over the planner's output, and the condition tests the gate's decision
    assert tasks[loop].parameter_iterator.items.input_parameter.endswith("plan-runs-Output")
    condition = tasks[cond].trigger_policy.condition
    assert "register-model-Output" in condition and "'promote'" in condition, condition
    assert set(_component_tasks(spec, "comp-for-loop")) == {"train-model"}
    assert set(_component_tasks(spec, "comp-condition")) == {"promote-model"}


def test_evaluate_collects_every_training_output(specs: Any) -> None:
    spec, _ = specs
    inputs = _root_tasks(spec)["evaluate"].inputs.artifacts
    for name, output in (("results", "results"), ("bundles", "bundle")):
        assert (
            inputs[name].task_output_artifact.output_artifact_key == f"pipelinechannel--train-model-{output}"
        )


def test_every_executor_runs_the_project_image_without_installing(specs: Any) -> None:
    spec, _ = specs
    executors = spec.deployment_spec["executors"]
    assert len(executors) == 11
    image = mdctr.image_ref()
    assert image == mdctr.IMAGE
    # immutable per commit: version and git sha in the tag
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout
    assert image.split(":")[-1].startswith(f"{mdctr.__version__}-{sha.strip()[:12]}"), image
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == image, name
        script = " ".join(container["command"])
        assert "pip install" not in script, f"{name} installs packages at start"


def test_parameters_have_defaults_from_the_registry(specs: Any) -> None:
    from mdctr.models import model_names

    spec, _ = specs
    params = spec.root.input_definitions.parameters
    expected = {
        "dataset", "dataset_options", "data_rev", "data_md5", "dvc_remote", "models", "domain_sources", "seeds", "flop_budget", "epochs",
        "tracking_uri", "promotion_tolerance",
    }  # fmt: skip
    assert expected <= set(params)
    assert [v.string_value for v in params["models"].default_value.list_value.values] == model_names()
    assert params["flop_budget"].default_value.string_value == "model:dnn"
    # the cluster default fetches the data version committed with the code, by DVC md5, with no git checkout
    from mdctr.versioning import data_version_md5, default_remote_url

    assert params["data_md5"].default_value.string_value == data_version_md5(PROJECT_ROOT / "data.dvc")
    assert params["dvc_remote"].default_value.string_value == default_remote_url(PROJECT_ROOT)
    assert params["dvc_remote"].default_value.string_value.startswith("s3://")
    assert params["data_rev"].default_value.string_value == ""


def test_exit_handler_closes_the_parent_run(specs: Any) -> None:
    spec, _ = specs
    root = dict(spec.root.dag.tasks)
    handler = next(name for name in root if name.startswith("exit-handler"))
    assert set(root) == {handler, "finish-run"}
    exit_task = root["finish-run"]
    # runs whatever the handler's DAG did, and receives its final status
    assert (
        exit_task.trigger_policy.strategy
        == pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.ALL_UPSTREAM_TASKS_COMPLETED
    )
    assert handler in exit_task.dependent_tasks
    assert exit_task.inputs.parameters["status"].task_final_status.producer_task == handler
    # it finds the parent run by the KFP run id, which start_run also tags it with
    for task in (exit_task, _root_tasks(spec)["start-run"]):
        assert (
            task.inputs.parameters["kfp_run_id"].runtime_value.constant.string_value
            == "{{$.pipeline_job_uuid}}"
        )


def test_retries_and_caching(specs: Any) -> None:
    spec, _ = specs
    tasks = {
        **_root_tasks(spec),
        **_component_tasks(spec, "comp-for-loop"),
        **_component_tasks(spec, "comp-condition"),
    }
    tasks["finish-run"] = dict(spec.root.dag.tasks)["finish-run"]
    for name in ("fetch-data", "train-model"):
        retry = tasks[name].retry_policy
        assert retry.max_retry_count == 2 and retry.backoff_duration.seconds == 30, name
        assert retry.backoff_factor == 2 and retry.backoff_max_duration.seconds == 300, name
    assert not any(tasks[n].HasField("retry_policy") for n in tasks if n not in ("fetch-data", "train-model"))
    cached = {n for n, t in tasks.items() if t.caching_options.enable_cache}
    # keyed on data and parameters only: no cached task takes the KFP run id or the MLflow run
    assert cached == {"fetch-data", "prepare-data", "mine-domains", "plan-runs"}, cached
    for name in cached:
        params = tasks[name].inputs.parameters
        assert "kfp_run_id" not in params and "parent_run_id" not in params and "tracking_uri" not in params
    for name in ("start-run", "register-model", "promote-model", "finish-run", "train-model", "evaluate"):
        assert not tasks[name].caching_options.enable_cache, name


def _k8s_executors(platform: pipeline_spec_pb2.PlatformSpec) -> dict[str, dict[str, Any]]:
    k8s = json_format.MessageToDict(platform.platforms["kubernetes"])
    return k8s["deploymentSpec"]["executors"]


def test_kubernetes_settings_on_every_task(specs: Any) -> None:
    spec, platform = specs
    executors = _k8s_executors(platform)
    assert set(executors) == set(spec.deployment_spec["executors"])
    for name, cfg in executors.items():
        secrets = {s["secretName"]: s for s in cfg["secretAsEnv"]}
        assert {"mdctr-s3", "mdctr-mlflow"} <= set(secrets), name
        envs = {m["envVar"] for s in cfg["secretAsEnv"] for m in s["keyToEnv"]}
        assert set(S3_SECRET_KEYS.values()) | set(MLFLOW_SECRET_KEYS.values()) <= envs, name
        assert cfg["imagePullPolicy"] == "IfNotPresent"


def test_training_gets_larger_resources(specs: Any) -> None:
    spec, _ = specs
    executors = spec.deployment_spec["executors"]
    settings = ClusterSettings()
    train = executors["exec-train-model"]["container"]["resources"]
    step = executors["exec-evaluate"]["container"]["resources"]
    assert train["cpuLimit"] == float(settings.training.cpu_limit)
    assert train["cpuLimit"] > step["cpuLimit"]
    assert train["resourceMemoryLimit"] == settings.training.memory_limit
    assert "accelerator" not in train


def test_gpu_build_requests_an_accelerator_for_training_only(tmp_path: Path) -> None:
    settings = ClusterSettings(
        gpu_accelerator="nvidia.com/gpu", image_pull_policy="Always", s3_secret="s3-creds"
    )
    spec, platform = _load(compile_pipeline(tmp_path / "gpu.yaml", settings))
    executors = spec.deployment_spec["executors"]
    accel = executors["exec-train-model"]["container"]["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] == "1"
    assert "accelerator" not in executors["exec-evaluate"]["container"]["resources"]
    for cfg in _k8s_executors(platform).values():
        assert cfg["imagePullPolicy"] == "Always"
        assert "s3-creds" in {s["secretName"] for s in cfg["secretAsEnv"]}


def test_bad_settings_fail_early() -> None:
    with pytest.raises(ValueError, match="image_pull_policy"):
        ClusterSettings(image_pull_policy="Sometimes")


def test_every_parameter_and_component_input_is_described(compiled: Path) -> None:
    """The Kubeflow UI's run form and task pages show these descriptions (from the docstrings' Args)."""
    spec = next(iter(yaml.safe_load_all(compiled.read_text())))
    root = spec["root"]["inputDefinitions"]["parameters"]
    undescribed = [name for name, p in root.items() if not p.get("description")]
    assert not undescribed, f"pipeline parameters without a description: {undescribed}"
    # the JSON-string options say what they accept, with an example
    for name in ("dataset_options", "train_options", "miner_options"):
        assert "JSON object" in root[name]["description"] and "{" in root[name]["description"], name
    tasks = {
        t["componentRef"]["name"]
        for c in spec["components"].values()
        for t in c.get("dag", {}).get("tasks", {}).values()
    } | {t["componentRef"]["name"] for t in spec["root"]["dag"]["tasks"].values()}
    step_components = {n for n in tasks if "executorLabel" in spec["components"][n]}
    assert len(step_components) >= 11
    for name in step_components:
        inputs = spec["components"][name].get("inputDefinitions", {})
        for kind in ("parameters", "artifacts"):
            for arg, d in inputs.get(kind, {}).items():
                assert d.get("description"), f"{name}: input {arg!r} has no description"


def test_an_undescribed_component_input_fails_at_import() -> None:
    from components import described

    def step(tracking_uri: str, brand_new_input: int) -> None:
        """A step."""

    with pytest.raises(KeyError, match="brand_new_input"):
        described()(step)
    described(brand_new_input="Documented here.")(step)
    assert "brand_new_input: Documented here." in step.__doc__


def _train_job_settings(spec: pipeline_spec_pb2.PipelineSpec) -> tuple[ClusterSettings, str | None]:
    from mdctr.trainjob import SETTINGS_ENV, job_settings_from_json

    container = spec.deployment_spec["executors"]["exec-train-model"]["container"]
    (value,) = [e["value"] for e in container["env"] if e["name"] == SETTINGS_ENV]
    return job_settings_from_json(value)


def test_train_backend_parameters_reach_every_training_entry(compiled: Path, specs: Any) -> None:
    """train_backend/train_nodes are run-form parameters fed to each loop iteration's train task, and the
    train task carries the compiled image and settings that the TrainJobs it creates use."""
    spec, _ = specs
    root = next(iter(yaml.safe_load_all(compiled.read_text())))["root"]["inputDefinitions"]["parameters"]
    assert (
        root["train_backend"]["defaultValue"] == "task" and root["train_backend"]["parameterType"] == "STRING"
    )
    assert (
        root["train_nodes"]["defaultValue"] == 2 and root["train_nodes"]["parameterType"] == "NUMBER_INTEGER"
    )
    assert (
        "TrainJob" in root["train_backend"]["description"]
        and "docs/deploy.md" in root["train_backend"]["description"]
    )
    train = _component_tasks(spec, "comp-for-loop")["train-model"]
    for name in ("train_backend", "train_nodes"):
        assert train.inputs.parameters[name].component_input_parameter == f"pipelinechannel--{name}"
    assert _train_job_settings(spec) == (ClusterSettings(), mdctr.image_ref())


def test_train_jobs_get_the_compiled_cluster_settings(tmp_path: Path) -> None:
    settings = ClusterSettings(gpu_accelerator="nvidia.com/gpu", gpu_count=2, s3_secret="s3-creds")
    spec, _ = _load(compile_pipeline(tmp_path / "gpu.yaml", settings))
    assert _train_job_settings(spec) == (settings, mdctr.image_ref())
