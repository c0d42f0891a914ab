"""The promotion gate's rule, :func:`mdctr.tracking.gate.judge`, on plain numbers: no MLflow store is opened."""

from __future__ import annotations

import math

import pytest

from mdctr.tracking import gate
from mdctr.tracking.gate import Scores, judge
from mdctr.tracking.names import KEEP, PROMOTE

SCHEMA = ("ml-1m", "abc123")


@pytest.fixture(autouse=True)
def no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any store access from the rule fails the test: it must work on numbers alone."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("judge touched MLflow")

    monkeypatch.setattr(gate, "get_client", refuse)
    monkeypatch.setattr(gate, "load_registered", refuse)


def scores(version: str, auc: float | None, domains: dict[int, float], schema=SCHEMA, metric="auc") -> Scores:
    overall = {} if auc is None else {metric: auc}
    return Scores(version, overall, {d: {metric: v} for d, v in domains.items()}, schema)


def test_no_champion_promotes_the_first_version() -> None:
    d = judge(scores("1", 0.70, {0: 0.7}), None)
    assert d.promote and d.decision == PROMOTE
    assert d.reason == "no champion yet; version 1 becomes the first"
    assert d.champion_version is None and d.champion == {} and d.domain_deltas == {}


def test_better_overall_with_no_domain_regression_promotes() -> None:
    champion = scores("1", 0.70, {0: 0.70, 1: 0.70, 2: 0.70})
    d = judge(scores("2", 0.72, {0: 0.71, 1: 0.72, 2: 0.70}), champion, "auc", 0.002)
    assert d.promote and d.champion_version == "1"
    assert d.domain_deltas == pytest.approx({0: 0.01, 1: 0.02, 2: 0.0})
    assert d.reason.startswith("overall auc improves by +0.02000 over v1")
    assert d.challenger == {"auc": 0.72} and d.champion == {"auc": 0.70}


def test_not_better_overall_keeps_the_champion() -> None:
    d = judge(scores("3", 0.715, {0: 0.72}), scores("2", 0.72, {0: 0.71}))
    assert not d.promote and d.decision == KEEP
    assert d.reason == "overall auc 0.71500 does not beat champion v2 (0.72000)"
    # equal is not better
    assert not judge(scores("3", 0.72, {}), scores("2", 0.72, {})).promote


def test_a_domain_regressing_beyond_tolerance_blocks_and_a_looser_tolerance_accepts() -> None:
    champion = scores("2", 0.72, {0: 0.71, 1: 0.72, 2: 0.70})
    challenger = scores("4", 0.73, {0: 0.75, 1: 0.75, 2: 0.695})
    d = judge(challenger, champion, "auc", 0.002)
    assert not d.promote and "domain(s) [2] regress beyond tolerance 0.002" in d.reason
    assert d.domain_deltas[2] == pytest.approx(-0.005)
    assert judge(challenger, champion, "auc", 0.01).promote


def test_a_domain_missing_from_the_challenger_is_a_regression() -> None:
    d = judge(scores("2", 0.80, {0: 0.8}), scores("1", 0.70, {0: 0.7, 1: 0.7}))
    assert not d.promote and d.domain_deltas[1] == -math.inf and "domain(s) [1]" in d.reason


def test_lower_is_better_for_logloss() -> None:
    champion = scores("1", 0.50, {0: 0.50}, metric="logloss")
    assert judge(scores("2", 0.45, {0: 0.46}, metric="logloss"), champion, "logloss").promote
    worse = judge(scores("3", 0.55, {0: 0.44}, metric="logloss"), champion, "logloss")
    assert not worse.promote and "does not beat" in worse.reason


def test_other_dataset_or_feature_schema_is_never_compared() -> None:
    champion = scores("1", 0.60, {0: 0.6})
    d = judge(scores("2", 0.99, {0: 0.99}, schema=("shop", "abc123")), champion)
    assert not d.promote and "different datasets ('shop' vs 'ml-1m')" in d.reason and d.champion == {}
    d = judge(scores("2", 0.99, {0: 0.99}, schema=("ml-1m", "fff")), champion)
    assert not d.promote and "different feature schemas" in d.reason


def test_missing_metrics_and_the_champion_itself() -> None:
    champion = scores("1", 0.70, {})
    d = judge(scores("2", None, {}), champion)
    assert not d.promote and d.reason == "version 2 has no overall test 'auc' to compare"
    d = judge(scores("2", 0.6, {}), scores("1", None, {}))
    assert d.promote and d.reason == "champion v1 has no 'auc'; challenger replaces it"
    d = judge(scores("1", 0.70, {}), champion)
    assert not d.promote and d.reason == "version 1 is already the champion"


def test_decision_serialises_with_string_domain_keys() -> None:
    d = judge(scores("2", 0.72, {0: 0.71}), scores("1", 0.70, {0: 0.70}))
    out = d.to_dict()
    assert out["domain_deltas"] == {"0": pytest.approx(0.01)} and out["version"] == "2"
