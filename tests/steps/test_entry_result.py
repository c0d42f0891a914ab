"""The training entry's record (``metrics.json``): the layout the step has always written, read back with a clear
error for a bad file, and the one set of scalars the train step and evaluate show."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mdctr.training.entry_result import (
    METRICS_FILE,
    DomainMetrics,
    EntryKey,
    EntryMetrics,
    EntryResult,
    EntryResultError,
    per_domain_metrics,
    read_predictions,
    write_predictions,
)

#: the file the train step wrote before the record existed (its key order, ints, NaN as null), trimmed
OLD_LAYOUT = {
    "entry": {"model": "star", "domain_source": "handcrafted", "seed": 0},
    "run_id": "78f376a2ded945f18555449872305c40",
    "overall": {
        "auc": 0.5756940561860572,
        "logloss": 0.6856938112505154,
        "flops_per_sample": 115168.0,
        "dense_params": 212462,
        "width": 0.921875,
        "train_samples_per_s": 115286.06076766532,
        "best_valid_auc": 0.5261829874262595,
        "valid_logloss": 0.6762655695242032,
        "best_valid_logloss": 0.6762655695242032,
        "base_rate_logloss": 0.69293826968748,
        "train_positive_rate": 0.6035833333333334,
        "train_wall_s": 0.2670624140000655,
        "epochs_run": 2,
    },
    "per_domain": [
        {"domain": 0, "name": "age<25", "rows": 392, "positive_rate": 0.52, "auc": 0.606, "logloss": 0.694},
        {"domain": 1, "name": "age25-34", "rows": 3, "positive_rate": 1.0, "auc": None, "logloss": 0.1},
    ],
    "budget": {"budget": "model:dnn", "budget_flops": 115456.0, "budget_rel_error": 0.0025},
    "history": [{"epoch": 1, "train_loss": 0.68, "valid_auc": 0.47, "valid_logloss": None}],
    "num_routing_domains": 3,
    "early_stop_metric": "auc",
    "warm_started": "",
    "calibration": None,
    "settings": {"flop_budget": "model:dnn", "epochs": 2, "train_options": "{}", "warm_start": ""},
}


def _write_old(directory: Path, raw: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    # exactly how mdctr.io.write_json_atomic has always written it
    (directory / METRICS_FILE).write_text(json.dumps(raw, indent=2, allow_nan=False))
    return directory


def test_a_file_in_the_old_layout_reads_and_writes_back_byte_for_byte(tmp_path: Path) -> None:
    old = _write_old(tmp_path / "old", OLD_LAYOUT)
    result = EntryResult.read(old)
    assert result.entry == EntryKey("star", "handcrafted", 0) and result.entry.name == "star/handcrafted"
    assert result.overall.dense_params == 212462 and result.flops == 115168.0 and result.width == 0.921875
    assert math.isnan(result.per_domain[1].auc)  # null: undefined with one class
    assert result.history[0]["valid_logloss"] is None  # the history is carried as written

    path = result.write(tmp_path / "new")
    assert path.read_bytes() == (old / METRICS_FILE).read_bytes()


def test_scalars_are_the_finite_values_and_the_per_domain_metrics_asked_for(tmp_path: Path) -> None:
    result = EntryResult.read(_write_old(tmp_path, OLD_LAYOUT))
    scalars = result.scalars()
    assert list(scalars)[:5] == ["auc", "logloss", "flops_per_sample", "dense_params", "width"]
    assert scalars["dense_params"] == 212462.0 and scalars["epochs_run"] == 2.0
    assert scalars["domain.0.auc"] == 0.606 and scalars["domain.1.logloss"] == 0.1
    assert "domain.1.auc" not in scalars  # NaN is left out
    winner = result.scalars(("auc",))  # evaluate's winner: per-domain AUC only
    assert [k for k in winner if k.startswith("domain.")] == ["domain.0.auc"]
    assert all(math.isfinite(v) for v in scalars.values())


def test_an_older_record_without_the_later_metrics_reads_with_nan() -> None:
    overall = {"auc": 0.7, "logloss": 0.5, "flops_per_sample": 1e5, "dense_params": 10, "width": 1.0}
    m = EntryMetrics(**overall)
    assert math.isnan(m.base_rate_logloss) and m.epochs_run is None
    assert m.finite() == overall


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["overall"].pop("auc"), "overall.auc: Field required"),
        (
            lambda r: r["overall"].update(dense_params="many"),
            "overall.dense_params: Input should be a valid integer",
        ),
        (lambda r: r["per_domain"][0].pop("name"), "per_domain[0].name: Field required"),
        (lambda r: r.pop("entry"), "entry: Field required"),
    ],
)
def test_a_bad_record_names_the_file_and_the_field(
    tmp_path: Path, change: Callable[[dict], object], message: str
) -> None:
    raw = json.loads(json.dumps(OLD_LAYOUT))
    change(raw)
    _write_old(tmp_path, raw)
    with pytest.raises(EntryResultError) as err:
        EntryResult.read(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / METRICS_FILE}: {message}"), text
    assert "\n" not in text


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics\.json"):
        EntryResult.read(tmp_path)
    (tmp_path / METRICS_FILE).write_text("{not json")
    with pytest.raises(EntryResultError, match=r"metrics.json: not JSON"):
        EntryResult.read(tmp_path)


def test_per_domain_metrics_follow_the_domain_ids() -> None:
    metrics = {
        "domains": {
            "a": {"rows": 5, "positive_rate": 0.2, "logloss": 0.4, "auc": 0.6},
            "b": {
                "rows": 0,
                "positive_rate": math.nan,
                "auc": math.nan,
                "logloss": math.nan,
                "reason": "no rows",
            },
        }
    }
    got = per_domain_metrics(metrics, ("a", "b", "c"))
    assert got[0] == DomainMetrics(0, "a", 5, 0.2, 0.6, 0.4)
    assert list(got[0].to_dict()) == ["domain", "name", "rows", "positive_rate", "auc", "logloss"]
    assert got[1].rows == 0 and math.isnan(got[1].auc)
    assert got[2].name == "c" and got[2].rows is None  # a domain with no entry at all


def test_predictions_round_trip(tmp_path: Path) -> None:
    labels, probs, domains = np.array([0.0, 1.0]), np.array([0.2, 0.9]), np.array([1, 0])
    write_predictions(tmp_path, labels=labels, probs=probs, domains=domains)
    got = read_predictions(tmp_path)
    assert np.array_equal(got["labels"], labels) and np.array_equal(got["probs"], probs)
    assert np.array_equal(got["domains"], domains)
