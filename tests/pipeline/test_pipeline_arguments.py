"""``PipelineArguments``: the one definition of the training pipeline's parameters and their defaults (the
compiled pipeline's defaults are its defaults), the mapping the pipeline function takes, a local run's
defaults, and values refused before any task starts."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

from mdctr.config import ConfigError
from mdctr.pipeline import PROJECT_ROOT, PipelineArguments, check_parameters, compile_pipeline, load_pipeline
from mdctr.schema import SchemaError


def test_the_compiled_defaults_are_the_arguments_defaults() -> None:
    inputs = load_pipeline().component_spec.inputs
    defaults = PipelineArguments().kfp_arguments()
    assert set(inputs) == set(defaults)  # every pipeline parameter is a field, and nothing else
    assert {name: spec.default for name, spec in inputs.items()} == defaults


def test_the_defaults_are_a_cluster_runs(tmp_path: Path) -> None:
    from mdctr import versioning
    from mdctr.models import model_names
    from mdctr.steps.plan_runs import DEFAULT_DOMAIN_SOURCES

    args = PipelineArguments()
    assert args.models == tuple(model_names()) and args.domain_sources == DEFAULT_DOMAIN_SOURCES
    assert args.seeds == (0, 1, 2) and args.data_rev == ""
    # the data version committed with the code, fetched from the DVC remote by md5
    assert args.data_md5 == versioning.data_version_md5(PROJECT_ROOT / versioning.DVC_FILE) != ""
    assert args.dvc_remote == versioning.default_remote_url(PROJECT_ROOT)
    # what a server is sent for these arguments is what the compiled package takes
    check_parameters(compile_pipeline(tmp_path / "pipeline.yaml"), args.kfp_arguments())


def test_a_local_run_reads_the_local_data_with_one_seed() -> None:
    local = PipelineArguments.local()
    assert (local.data_rev, local.data_md5, local.dvc_remote, local.seeds) == ("local", "", "", (0,))
    cluster = PipelineArguments()
    differ = {f.name for f in fields(local) if getattr(local, f.name) != getattr(cluster, f.name)}
    assert differ == {"data_rev", "data_md5", "dvc_remote", "seeds"}
    assert PipelineArguments.local(seeds=[1, 2], data_rev="v2").seeds == (1, 2)  # given values win


def test_the_kfp_mapping_has_lists_and_json_text() -> None:
    args = PipelineArguments.local(
        dataset="synthetic",
        dataset_options={"rows": 3000},
        models=["dnn", "star"],
        seeds=["0", 1],
        train_options={"batch_size": 512},
        canary_percent=20,
    )
    mapping = args.kfp_arguments()
    assert mapping["models"] == ["dnn", "star"] and mapping["seeds"] == [0, 1]
    assert mapping["domain_sources"] == ["handcrafted", "mined"]
    assert json.loads(mapping["dataset_options"]) == {"rows": 3000}
    assert mapping["train_options"] == '{"batch_size": 512}' and mapping["miner_options"] == "{}"
    assert mapping["canary_percent"] == 20 and mapping["promote_controls"] is False
    # sequences are held as tuples, so a copy with one change compares equal field by field
    assert replace(args, canary_percent=0) == replace(args, canary_percent=0)
    assert args.models == ("dnn", "star")


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (
            {"warm_start_fallback": "warm"},
            ConfigError,
            "--warm-start-fallback must be error or cold; got 'warm'",
        ),
        ({"eval_period": "7d"}, ConfigError, "--eval-period selects periods by time.*--split random"),
        (
            {"train_window": "7 parsecs", "split": "time"},
            SchemaError,
            "--train-window '7 parsecs' is not a span",
        ),
    ],
)
def test_bad_values_are_refused_at_once(values: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        PipelineArguments.local(**values)
    # the same periods with a time split are fine
    assert PipelineArguments.local(split="time", train_window="30d", eval_period="10%").split == "time"


def test_a_misspelt_parameter_is_refused() -> None:
    with pytest.raises(TypeError, match="epoch"):
        PipelineArguments.local(epoch=2)
