"""The monitoring pipeline compiles with no environment (only PATH), as CI compiles the training pipeline,
and holds the importers and the monitor task with caching off, the per-feature limits and the cluster Secrets.
(Its local run: test_monitor_pipeline_run.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from mdctr.pipeline import PROJECT_ROOT

COMPILE = (
    "import sys; from kfp import compiler; from pipelines.monitoring import monitoring_pipeline; "
    "compiler.Compiler().compile(monitoring_pipeline, sys.argv[1])"
)


def test_monitoring_pipeline_compiles_without_environment(tmp_path: Path) -> None:
    out = tmp_path / "monitoring.yaml"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(PROJECT_ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", COMPILE, str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    spec, platform = yaml.safe_load_all(out.read_text())
    assert spec["pipelineInfo"]["name"] == "mdctr-monitoring"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"importer", "importer-2", "monitor"}
    monitor = tasks["monitor"]
    assert monitor["cachingOptions"].get("enableCache", False) is False  # proto default: off
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert {
        "log_uri",
        "reference_uri",
        "reference_codes_uri",
        "max_psi",
        "max_oov_share",
        "max_domain_psi",
        "feature_max_psi",
        "feature_max_oov_share",
    } <= set(inputs)
    assert inputs["max_domain_psi"]["defaultValue"] == 0.1
    for name in ("feature_max_psi", "feature_max_oov_share"):
        assert inputs[name]["defaultValue"] == "{}" and "JSON object" in inputs[name]["description"]
    assert all(p.get("description") for p in inputs.values()), "every parameter is described in the UI"
    # the monitor task's per-feature limits come from the pipeline's parameters
    args = monitor["inputs"]["parameters"]
    assert args["feature_max_psi"]["componentInputParameter"] == "feature_max_psi"
    # the number of breaches is the pipeline's output (a run with fail_on_breach=false returns it)
    assert "Output" in spec["root"]["outputDefinitions"]["parameters"]
    image = spec["deploymentSpec"]["executors"]["exec-monitor"]["container"]["image"]
    assert image and "python:" not in image  # the project's image, not KFP's default
    # on a cluster the task reads an s3:// log with the S3 Secret (mdctr.k8s, as every training task)
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitor"]
    assert {s["secretName"] for s in executor["secretAsEnv"]} == {"mdctr-s3", "mdctr-mlflow"}


def test_feature_limit_parameters_parse_strictly() -> None:
    import math

    import pytest

    from mdctr.config import ConfigError
    from mdctr.steps.monitor import parse_feature_limits

    parsed = parse_feature_limits('{"user_id": "inf", "zip": 0.5, "age": 1}', what="feature_max_psi")
    assert parsed == (("user_id", math.inf), ("zip", 0.5), ("age", 1.0))
    assert parse_feature_limits("{}", what="x") == () == parse_feature_limits("", what="x")
    for bad in (
        '{"zip": true}',
        '{"zip": -1}',
        '{"zip": "nan"}',
        '{"zip": null}',
        '{"zip": [1]}',
        '{"zip": "x"}',
    ):
        with pytest.raises(ConfigError, match=r"^feature_max_oov_share: column 'zip': expected a limit"):
            parse_feature_limits(bad, what="feature_max_oov_share")
    with pytest.raises(ConfigError, match=r"^feature_max_psi: not valid JSON"):
        parse_feature_limits("{zip: 1}", what="feature_max_psi")
