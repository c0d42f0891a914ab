"""Domain names in MLflow metric keys: readable, never merged, and read back exactly (issue 22: ``<25`` used to
become ``domain._25``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import _validate_metric_name

from mdctr import tracking
from mdctr.serving.bundle import METRICS_FILE
from mdctr.serving.demo import DemoBundle
from mdctr.tracking.runs import (
    key_part_tags,
    metric_key_part,
    per_domain_metrics,
    raw_key_parts,
    raw_metric_key,
)

#: ML-1M-style age groups and names MLflow refuses as they are
NAMES = ("<25", "25-34", ">=56", "56+", "Photo & Optics", "a.b/c", "Москва")


def test_safe_names_stay_and_the_others_are_spelled_out() -> None:
    assert [metric_key_part(n) for n in NAMES] == [
        "_lt_25",
        "25-34",
        "_gt__eq_56",
        "56_plus_",
        "Photo _and_ Optics",
        "a_dot_b_slash_c",
        "Москва",
    ]
    for n in NAMES:
        _validate_metric_name(f"domain.{metric_key_part(n)}.auc")  # MLflow accepts every key


def test_distinct_names_never_share_a_key_and_each_reads_back() -> None:
    per_domain = [
        {"domain": 0, "name": "<25", "auc": 0.6},
        {"domain": 1, "name": "_lt_25", "auc": 0.7},  # spells like the encoded <25
        {"domain": 2, "name": "25-34", "auc": 0.8},
    ]
    metrics = per_domain_metrics(per_domain)
    assert metrics == {"domain._lt_25.auc": 0.6, "domain._lt_25_1.auc": 0.7, "domain.25-34.auc": 0.8}
    tags = key_part_tags(per_domain)
    assert raw_key_parts(tags) == {"_lt_25": "<25", "_lt_25_1": "_lt_25"}
    assert {raw_metric_key(k, tags) for k in metrics} == {
        "domain.<25.auc",
        "domain._lt_25.auc",
        "domain.25-34.auc",
    }


@pytest.mark.integration
def test_run_keeps_the_raw_names_and_the_model_card_shows_them(
    tmp_path: Path, demo_bundle: DemoBundle
) -> None:
    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = tracking.start_parent_run(uri, run_name="pipeline")
    per_domain = [
        {"domain": d, "name": n, "auc": 0.7 + d / 100} for d, n in enumerate(("<25", "25-34", ">=56"))
    ]
    run_id = tracking.log_training_run(
        uri, parent, run_name="dnn", params={}, per_domain=per_domain, system_metrics=False
    )
    run = MlflowClient(uri).get_run(run_id)
    assert "domain._25.auc" not in run.data.metrics  # the old, lossy key
    assert run.data.metrics["domain._lt_25.auc"] == pytest.approx(0.70)
    assert run.data.metrics["domain._gt__eq_56.auc"] == pytest.approx(0.72)
    assert {raw_metric_key(k, run.data.tags) for k in run.data.metrics if k.startswith("domain.")} == {
        "domain.<25.auc",
        "domain.25-34.auc",
        "domain.>=56.auc",
    }
    bundle = tmp_path / "bundle"  # the demo bundle with per-domain test metrics, which the card lists
    shutil.copytree(demo_bundle.path, bundle)
    (bundle / METRICS_FILE).write_text(json.dumps({"overall": {"auc": 0.7}, "per_domain": per_domain}))
    rv = tracking.register_bundle(uri, bundle, run_id=run_id, input_example=demo_bundle.table)
    card = tracking.model_card.model_card(uri, rv.version, name=rv.name)
    assert "| 0 | <25 |" in card and "| 2 | >=56 |" in card
