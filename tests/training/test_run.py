from __future__ import annotations

import json
import math

import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mdctr.data.prepare import PreparedData
from mdctr.domains.miner import DomainMiner, MinerConfig, fit_miner
from mdctr.models import model_class, model_names
from mdctr.routing import model_inputs
from mdctr.routing.budget import model_flops
from mdctr.routing.flops import count_batch
from mdctr.training import TrainConfig, train_model

FAST = TrainConfig(epochs=1, batch_size=512, device="cpu")


@pytest.fixture(scope="module")
def miner(small_prepared: PreparedData) -> DomainMiner:
    config = MinerConfig(num_codes=3, epochs=1, batch_size=512, hidden=(16,), head_hidden=(16,))
    return fit_miner(small_prepared.train, model_inputs(small_prepared, 1), config)


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_trains_and_reports(name: str, small_prepared: PreparedData) -> None:
    sources = model_class(name).domain_sources
    source = "handcrafted" if "handcrafted" in sources else sources[0]
    t = train_model(small_prepared, name, source, width=0.25, config=FAST)
    s = t.summary()
    json.dumps(s)  # JSON-safe (NaN → None)
    assert t.predictions.shape == (len(small_prepared.test),)
    # the reported metrics are those of the returned predictions (not just numbers in range)
    labels = small_prepared.test.label.numpy()
    assert s["test_auc"] == pytest.approx(roc_auc_score(labels, t.predictions))
    assert s["test_logloss"] == pytest.approx(log_loss(labels, t.predictions))
    assert s["best_valid_auc"] == t.fit.history[t.fit.best_epoch - 1]["valid_auc"]
    assert set(s["domain_auc"]) == set(small_prepared.spec.schema.domain_names)
    assert s["flops_per_sample"] > 0 and s["dense_params"] > 0 and s["train_samples_per_s"] > 0
    assert math.isfinite(t.fit.best_valid_auc)


def test_mined_source_counts_the_miner(small_prepared: PreparedData, miner: DomainMiner) -> None:
    t = train_model(small_prepared, "shared_bottom", "mined", width=0.25, miner=miner, config=FAST)
    assert t.inputs.num_domains == 3
    routed = small_prepared.valid.with_domain(miner.assign(small_prepared.valid))
    without = model_flops("shared_bottom", t.inputs, 0.25, count_batch(routed))
    assert t.flops > without  # the serving cost includes the miner's forward


def test_budget_fits_width_before_training(small_prepared: PreparedData) -> None:
    t = train_model(small_prepared, "hamur", "handcrafted", config=FAST, budget="model:dnn@0.5")
    assert t.extra["budget_rel_error"] <= 0.03
    assert abs(t.flops - t.extra["budget_flops"]) / t.extra["budget_flops"] <= 0.03
