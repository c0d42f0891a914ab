from __future__ import annotations

import json

from typer.testing import CliRunner

from mdctr.cli import app

runner = CliRunner()


def test_models_zoo_names_sources_and_config() -> None:
    result = runner.invoke(app, ["models", "zoo", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.output)}
    assert rows["dnn"]["domain_sources"] == ["none"]
    assert "hidden" in rows["dnn"]["config"]


def test_train_prints_json_summary() -> None:
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "dnn",
        "--domains",
        "none",
        "--epochs",
        "1",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    for key in ("test_auc", "test_logloss", "domain_auc", "flops_per_sample", "dense_params", "wall_s"):
        assert key in summary
    assert summary["train_samples_per_s"] > 0


def test_train_rejects_a_source_the_model_does_not_accept() -> None:
    result = runner.invoke(app, ["train", "--dataset", "synthetic", "--model", "dnn", "--domains", "mined"])
    assert result.exit_code == 2
    assert "does not accept domain source 'mined'" in result.output


def test_benchmark_rejects_bad_model_config() -> None:
    base = ["benchmark", "--dataset", "synthetic", "--models", "dnn", "--domains", "none", "--epochs", "1"]
    result = runner.invoke(app, [*base, "--model-config", "{not json"])
    assert result.exit_code == 2 and "--model-config is not valid JSON" in result.output
    result = runner.invoke(app, [*base, "--model-config", '{"dnn": 3}'])
    assert result.exit_code == 2 and "must map model names to objects" in result.output
    result = runner.invoke(app, [*base, "--model-config", '{"star": {}}'])
    assert result.exit_code == 2 and "model configs given for ['star']" in result.output
