from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mdctr.evaluation.significance import (
    against_reference,
    against_reference_markdown,
    auc_confidence_interval,
    compare_entries,
    delong_test,
    holm,
    paired_ttest,
)


def test_paired_ttest_known_values() -> None:
    # differences 0.01, 0.02, 0.01: mean 1/75, sd 0.01/√3 → t = 4 with 2 degrees of freedom, p ≈ 0.0572
    r = paired_ttest([0.71, 0.72, 0.71], [0.70, 0.70, 0.70])
    assert r.method == "paired_t" and r.n == 3
    assert r.statistic == pytest.approx(4.0)
    assert r.p_value == pytest.approx(0.05719, abs=1e-4)
    assert r.diff == pytest.approx(0.04 / 3)
    assert math.isnan(paired_ttest([0.7], [0.6]).p_value)


def test_delong_hand_computed_example() -> None:
    # A ranks perfectly (AUC 1); B = 0.75. Placement values give Var(AUC_A − AUC_B) = 0.125 → z = 1/√2
    y = np.array([1, 1, 0, 0])
    a = np.array([0.9, 0.8, 0.3, 0.1])
    b = np.array([0.9, 0.2, 0.3, 0.1])
    r = delong_test(y, a, b)
    assert r.diff == pytest.approx(0.25)
    assert r.statistic == pytest.approx(1 / math.sqrt(2))
    assert r.p_value == pytest.approx(0.4795, abs=1e-4)


def test_delong_detects_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    good = y + rng.normal(0, 0.8, y.size)
    weak = y + rng.normal(0, 2.0, y.size)
    r = delong_test(y, good, weak)
    assert r.diff == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, weak))
    assert r.p_value < 1e-6
    same = delong_test(y, good, good)
    assert same.diff == 0 and same.p_value == 1.0


def test_compare_entries_picks_the_test_by_seeds() -> None:
    y = np.array([1, 1, 0, 0])
    probs = {0: np.array([0.9, 0.8, 0.3, 0.1])}
    other = {0: np.array([0.9, 0.2, 0.3, 0.1])}
    assert compare_entries({0: 1.0}, {0: 0.75}, probs, other, y).method == "delong"
    seeds = compare_entries({0: 0.71, 1: 0.72, 2: 0.71}, {0: 0.70, 1: 0.70, 2: 0.70})
    assert seeds.method == "paired_t" and seeds.statistic == pytest.approx(4.0)


def test_holm_adjusts_against_the_formula() -> None:
    # sorted p = 0.01, 0.02, 0.04 (m = 3): 3·0.01, max(0.03, 2·0.02), max(0.04, 1·0.04); NaN is no test
    adjusted = holm([0.04, math.nan, 0.01, 0.02])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.03)
    assert adjusted[3] == pytest.approx(0.04) and math.isnan(adjusted[1])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1


def test_auc_interval_t_over_seeds_and_delong_for_one_seed() -> None:
    low, high, how = auc_confidence_interval([0.70, 0.72, 0.74])
    half = stats.t.ppf(0.975, 2) * np.std([0.70, 0.72, 0.74], ddof=1) / math.sqrt(3)
    assert how == "t" and low == pytest.approx(0.72 - half) and high == pytest.approx(0.72 + half)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = y + rng.normal(0, 1.5, y.size)
    auc = roc_auc_score(y, p)
    low, high, how = auc_confidence_interval([auc], y, p)
    assert how == "delong" and low < auc < high and 0.01 < high - low < 0.1


def test_against_reference_pairs_by_seed_and_holm_adjusts_the_table():
    values = {
        "default": {0: 0.800, 1: 0.802, 2: 0.801, 3: 0.803},
        "better": {0: 0.804, 1: 0.8055, 2: 0.8052, 3: 0.8068},  # higher on every seed
        "noise": {0: 0.801, 1: 0.801, 2: 0.802, 3: 0.802},
        "one_seed": {0: 0.9},  # nothing to pair: left out
    }
    rows = {r[0]: r for r in against_reference(values, "default")}
    assert set(rows) == {"better", "noise"}
    _, seeds, diff, p, p_holm = rows["better"]
    assert seeds == [0, 1, 2, 3] and diff == pytest.approx(0.003875, abs=1e-9)
    assert p == pytest.approx(
        stats.ttest_rel(list(values["better"].values()), list(values["default"].values())).pvalue
    )
    # two comparisons: the smaller p is doubled, the larger is at least that and at most 1
    assert p_holm == pytest.approx(min(1.0, 2 * p)) and p_holm < 0.05
    assert rows["noise"][4] >= p_holm and rows["noise"][4] > 0.05
    table = against_reference_markdown(values, "default", "valid AUC")
    assert "| better | 0,1,2,3 | +0.0039 |" in table and "one_seed" not in table
    with pytest.raises(KeyError, match="missing"):
        against_reference(values, "missing")


def test_one_seed_fallback_compares_predictions_of_the_same_test_rows_only() -> None:
    """Grids that draw each seed's split anew: seed 0 of A and seed 1 of B scored different rows, so no DeLong."""
    rng = np.random.default_rng(0)
    y0, y1 = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    p = rng.random(500)
    same = compare_entries({0: 0.7}, {0: 0.6}, {0: p}, {0: p[::-1]}, {0: y0})
    assert same.method == "delong"
    split_apart = compare_entries({0: 0.7}, {1: 0.6}, {0: p}, {1: p}, {0: y0, 1: y1})
    assert split_apart.method == "none" and "test rows differ" in split_apart.note
    one_split = compare_entries({0: 0.7}, {1: 0.6}, {0: p}, {1: p[::-1]}, {0: y0, 1: y0.copy()})
    assert one_split.method == "delong"  # a fixed split: the same rows under both seeds
    assert compare_entries({0: 0.7}, {1: 0.6}, {0: p}, {1: p}, y0).method == "delong"  # one label array
