"""Synthetic dataset: determinism, shapes, planted domains recoverable from features and relevant to the label."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import OneHotEncoder

from mdctr.config import ConfigError
from mdctr.data import LoadedDataset, load_dataset
from mdctr.data.synthetic import generate


def test_deterministic_by_seed() -> None:
    a, b, c = generate(rows=3000, seed=7), generate(rows=3000, seed=7), generate(rows=3000, seed=8)
    assert a.table.equals(b.table)
    np.testing.assert_array_equal(a.extras["planted_domain"], b.extras["planted_domain"])
    assert not a.table.equals(c.table)


def _digest(d: LoadedDataset) -> str:
    """sha256 of every column's name, dtype and bytes, then of the planted domains."""
    h = hashlib.sha256()
    for col in d.table.columns:
        values = np.ascontiguousarray(d.table[col].to_numpy())
        h.update(f"{col}:{values.dtype}".encode())
        h.update(values.tobytes())
    h.update(d.extras["planted_domain"].tobytes())
    return h.hexdigest()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"rows": 500}, "a60d51713b597283fb11c2cbce77aef05c9fa1e2a39ba71a3bb7be081235c3d4"),
        (
            {"rows": 777, "seed": 3, "conflict": 2.0},
            "a80ed75ad28921df1a66c501ecf8f9c1adf44e9d35af35d9bdb2679c57fdd51e",
        ),
        (
            {
                "rows": 300,
                "num_sparse": 1,
                "num_dense": 0,
                "vocab_size": 7,
                "num_domains": 3,
                "seed": 5,
                "sample_seed": 4,
                "handcrafted_noise": 1.0,
            },
            "b886d33dc0bd21729f56dd9a8b3262a927d5567dac138299a05299c1d554251a",
        ),
    ],
)
def test_draws_are_pinned_byte_for_byte(options: dict[str, Any], expected: str) -> None:
    """Same options and seed → the very bytes drawn before (a refactor must not move one RNG draw)."""
    assert _digest(generate(**options)) == expected


def test_shapes_and_types() -> None:
    d = generate(rows=500, num_sparse=3, num_dense=1, vocab_size=30, num_domains=5)
    t, s = d.table, d.schema
    assert s.sparse == ("f0", "f1", "f2") and s.dense == ("x0",) and s.num_domains == 5
    assert list(t.columns) == list(s.columns) and len(t) == 500
    planted = d.extras["planted_domain"]
    assert planted.dtype == np.int64 and planted.shape == (500,)
    assert t[list(s.sparse)].to_numpy().min() >= 0 and t[list(s.sparse)].to_numpy().max() < 30
    assert set(np.unique(t[s.label])) <= {0, 1}


def test_registered_with_options() -> None:
    d = load_dataset("synthetic", ".", rows=1000, num_domains=3)
    assert len(d.table) == 1000 and d.schema.num_domains == 3
    with pytest.raises(ConfigError, match="num_domain"):
        load_dataset("synthetic", ".", num_domain=3)


def test_handcrafted_is_a_noisy_view() -> None:
    clean = generate(rows=4000, handcrafted_noise=0.0)
    np.testing.assert_array_equal(clean.table[clean.schema.domain], clean.extras["planted_domain"])
    noisy = generate(rows=20000, handcrafted_noise=0.3, num_domains=4)
    agree = (noisy.table[noisy.schema.domain].to_numpy() == noisy.extras["planted_domain"]).mean()
    assert agree == pytest.approx(1 - 0.3 * 3 / 4, abs=0.02)


def _one_hot(d: LoadedDataset) -> sparse.csr_matrix:
    """[N, sum(vocab) + D] one-hot sparse ids next to the raw dense values."""
    s = d.schema
    ids = OneHotEncoder(handle_unknown="ignore").fit_transform(d.table[list(s.sparse)])
    return sparse.hstack([ids, sparse.csr_matrix(d.table[list(s.dense)].to_numpy())]).tocsr()


def test_planted_domain_recoverable_from_features() -> None:
    d = generate(rows=6000, num_domains=4)
    x, y = _one_hot(d), d.extras["planted_domain"]
    clf = LogisticRegression(max_iter=300).fit(x[:5000], y[:5000])
    acc = (clf.predict(x[5000:]) == y[5000:]).mean()
    assert acc > 0.9  # chance is ~0.25-0.35


def test_label_depends_on_domain() -> None:
    """Per planted domain models predict held-out clicks better than one pooled model of the same form."""
    d = generate(rows=30000, num_domains=4)
    x, y, k = _one_hot(d), d.table[d.schema.label].to_numpy(), d.extras["planted_domain"]
    train, test = np.arange(len(y)) < 24000, np.arange(len(y)) >= 24000
    pooled = LogisticRegression(max_iter=500).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    per = np.empty(test.sum())
    for dom in range(4):
        m = LogisticRegression(max_iter=500).fit(x[train & (k == dom)], y[train & (k == dom)])
        per[k[test] == dom] = m.predict_proba(x[test & (k == dom)])[:, 1]
    assert log_loss(y[test], per) < log_loss(y[test], pooled) - 0.01


def test_invalid_sizes() -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        generate(rows=10, vocab_size=2, num_domains=4)


def test_sample_seed_draws_new_rows_from_the_same_structure() -> None:
    """Chunks of one large dataset: other rows, one label function (a model fit on one chunk scores another)."""
    from sklearn.metrics import roc_auc_score

    a = generate(rows=20000, vocab_size=20, seed=0, sample_seed=1)
    b = generate(rows=20000, vocab_size=20, seed=0, sample_seed=2)
    other = generate(rows=20000, vocab_size=20, seed=5, sample_seed=2)
    assert not a.table.equals(b.table)
    again = generate(rows=20000, vocab_size=20, seed=0, sample_seed=1)
    assert a.table.equals(again.table)
    cols = ["f0", "f1", "f2", "f3"]
    enc = OneHotEncoder(handle_unknown="ignore").fit(a.table[cols])
    model = LogisticRegression(max_iter=500).fit(enc.transform(a.table[cols]), a.table["label"])
    same = roc_auc_score(b.table["label"], model.predict_proba(enc.transform(b.table[cols]))[:, 1])
    foreign = roc_auc_score(other.table["label"], model.predict_proba(enc.transform(other.table[cols]))[:, 1])
    assert same > 0.6 and same > foreign + 0.05, (same, foreign)


def test_conflict_column_says_nothing_of_the_domain_and_reverses_its_effect_in_odd_domains() -> None:
    """``conflict``: the planted-conflict structure (issue #23), with conflict=0 the data as it always was."""
    from sklearn.metrics import normalized_mutual_info_score

    from mdctr.data.synthetic import CONFLICT_STREAM

    before = generate(rows=3000, seed=3)
    np.testing.assert_array_equal(generate(rows=3000, seed=3, conflict=0.0).table, before.table)
    d = generate(rows=200_000, seed=3, vocab_size=400, conflict=2.0)
    last, planted = d.table["f3"].to_numpy(), d.extras["planted_domain"]
    assert normalized_mutual_info_score(planted, last % 4) < 0.001  # uniform whatever the domain
    effect = np.random.default_rng(np.random.SeedSequence([3, CONFLICT_STREAM])).normal(size=400)[last]
    label = d.table["label"].to_numpy()
    high = effect > 0.5
    low = effect < -0.5
    for k in range(4):
        rows = planted == k
        gap = (
            label[rows & high].mean() - label[rows & low].mean()
        )  # click rate, high-effect ids minus low ones
        # even domains click more on the ids the conflict effect favours, odd domains less: the sign reverses
        assert (gap > 0.5) if k % 2 == 0 else (gap < -0.5), (k, gap)  # measured ±0.65–0.68
    with pytest.raises(ConfigError, match="conflict must be >= 0"):
        generate(rows=10, conflict=-1.0)
