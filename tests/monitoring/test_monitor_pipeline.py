"""The monitoring pipeline compiles with no environment (only PATH), as CI compiles the training pipeline,
and holds the importers and the monitor task with caching off."""

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
    spec = yaml.safe_load(out.read_text())
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
    } <= set(inputs)
    assert inputs["max_domain_psi"]["defaultValue"] == 0.1
    image = spec["deploymentSpec"]["executors"]["exec-monitor"]["container"]["image"]
    assert image and "python:" not in image  # the project's image, not KFP's default
