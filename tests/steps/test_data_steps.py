"""fetch_data, validate_data, prepare_data and plan_runs on tiny data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mdctr.config import ConfigError
from mdctr.steps.fetch_data import GENERATED_FILE, FetchConfig, fetch_data
from mdctr.steps.plan_runs import PlanConfig, plan_runs
from mdctr.steps.prepare_data import PLANTED_FILE, SERVING_EXAMPLE_FILE
from mdctr.steps.validate_data import DataValidationError, ValidateConfig, validate_data


def test_fetch_records_the_version_on_the_parent_run(ws: Any) -> None:
    from mdctr import tracking
    from mdctr.tracking.setup import client

    f = ws.fetched
    assert f.rev == "generated" and f.files == 1 and (f.path / GENERATED_FILE).is_file()
    run = client(ws.tracking_uri).get_run(f.run_id)
    tags = run.data.tags
    assert tags[tracking.names.TAG_DATA_MD5] == f.md5
    assert tags[tracking.names.TAG_DATA_REV] == "generated"
    assert tags[tracking.names.TAG_KFP_RUN_ID] == "kfp-123"
    assert run.info.status == "RUNNING"


def test_fetch_md5_identifies_the_data(ws: Any, tmp_path: Path) -> None:
    again = fetch_data(
        out_dir=tmp_path / "a",
        config=FetchConfig(dataset="synthetic", dataset_options=ws.options, tracking_uri=ws.tracking_uri),
    )
    other = fetch_data(
        out_dir=tmp_path / "b",
        config=FetchConfig(dataset="synthetic", dataset_options='{"rows": 10}', tracking_uri=ws.tracking_uri),
    )
    assert again.md5 == ws.fetched.md5 and other.md5 != ws.fetched.md5


def test_fetch_local_copies_a_real_dataset(ws: Any, tmp_path: Path, datasets_dir: Path) -> None:
    out = fetch_data(
        out_dir=tmp_path / "raw",
        config=FetchConfig(
            dataset="ml-1m", data_rev="local", tracking_uri=ws.tracking_uri, datasets_dir=str(datasets_dir)
        ),
    )
    assert out.rev == "local" and (tmp_path / "raw" / "users.dat").is_file() and out.files >= 3


def test_fetch_rejects_a_misspelt_option(ws: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rowz"):
        fetch_data(
            out_dir=tmp_path / "x",
            config=FetchConfig(
                dataset="synthetic", dataset_options='{"rowz": 5}', tracking_uri=ws.tracking_uri
            ),
        )


def test_validate_passes_and_writes_both_reports(ws: Any, tmp_path: Path) -> None:
    out = validate_data(
        source=ws.fetched.path,
        html_path=tmp_path / "report.html",
        results_dir=tmp_path / "results",
        config=ValidateConfig(dataset="synthetic", dataset_options=ws.options),
    )
    assert out.rows == ws.rows and out.expectations > 0
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert out.json_path.is_file()


def test_validate_fails_after_writing_the_report(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match="expectation"):
        validate_data(
            source=empty,
            html_path=tmp_path / "report.html",
            results_dir=tmp_path / "results",
            config=ValidateConfig(dataset="ml-1m"),
        )
    assert (tmp_path / "report.html").stat().st_size > 0
    assert (tmp_path / "results" / "validation_report.json").is_file()


def test_prepare_writes_splits_example_and_planted_domains(ws: Any) -> None:
    p = ws.prepared
    assert sum(p.rows.values()) == ws.rows and p.num_domains >= 2
    for name in ("train.parquet", "valid.parquet", "test.parquet", "feature_spec.json", SERVING_EXAMPLE_FILE):
        assert (p.path / name).is_file(), name
    planted = np.load(p.path / PLANTED_FILE)
    assert {k: len(planted[k]) for k in ("train", "valid", "test")} == p.rows


def test_plan_keeps_only_sources_a_model_accepts() -> None:
    from mdctr.models import model_class

    out = plan_runs(
        config=PlanConfig(models=["dnn"], domain_sources=["none", "handcrafted", "mined"], seeds=[0, 1])
    )
    accepted = model_class("dnn").domain_sources
    assert [e["domain_source"] for e in out.entries] == [s for s in accepted for _ in (0, 1)]
    assert [e["seed"] for e in out.entries] == [0, 1] * len(accepted)
    assert ("dnn", "handcrafted") in out.skipped


def test_plan_runs_single_source_models_with_their_only_source() -> None:
    out = plan_runs(
        config=PlanConfig(models=["dnn", "star", "adaptive2"], domain_sources=["handcrafted"], seeds=[0])
    )
    assert [(e["model"], e["domain_source"]) for e in out.entries] == [
        ("dnn", "none"),
        ("star", "handcrafted"),
        ("adaptive2", "mined"),
    ]
    assert ("dnn", "handcrafted") in out.skipped and ("adaptive2", "handcrafted") in out.skipped


@pytest.mark.parametrize(
    ("models", "sources", "error", "match"),
    [
        (["dnn"], ["bogus"], ValueError, "bogus"),
        (["star"], [], ValueError, "no \\(model, domain source\\) pair"),
        (["nosuchmodel"], ["none"], KeyError, "nosuchmodel"),
    ],
)
def test_plan_rejects_bad_requests(models: list[str], sources: list[str], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        plan_runs(config=PlanConfig(models=models, domain_sources=sources))
