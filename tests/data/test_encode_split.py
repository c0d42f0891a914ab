"""Encoding (train-only fit, OOV, JSON round trip) and splits (seeded random, time order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdctr.data.encode import OOV_INDEX, FeatureSpec, split_table
from mdctr.data.synthetic import generate
from mdctr.schema import FeatureSchema, SchemaError

SCHEMA = FeatureSchema(
    name="tiny",
    sparse=("user", "city"),
    dense=("price",),
    label="label",
    domain="domain",
    domain_names=("a", "b"),
    time="ts",
)


def _frame(users: list, cities: list, prices: list, ts: list | None = None) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "user": users,
            "city": cities,
            "price": prices,
            "label": [i % 2 for i in range(n)],
            "domain": [i % 2 for i in range(n)],
            "ts": ts if ts is not None else list(range(n)),
        }
    )


def test_fit_on_train_only_and_oov() -> None:
    train = _frame([1, 2, 2], ["x", "y", "x"], [1.0, 2.0, 3.0])
    other = _frame([2, 99], ["z", "y"], [100.0, np.nan])
    spec = FeatureSpec.fit(train, SCHEMA)
    assert spec.vocab == {"user": [1, 2], "city": ["x", "y"]}
    assert spec.vocab_sizes == (3, 3)
    assert spec.mean["price"] == pytest.approx(2.0)  # the other frame's 100.0 does not move it
    enc = spec.encode_frame(other)
    assert enc["user"].tolist() == [2, OOV_INDEX]  # 99 was never seen in train
    assert enc["city"].tolist() == [OOV_INDEX, 2]
    assert enc["price"].iloc[1] == 0.0  # NaN → train mean → 0 after scaling
    with pytest.raises(SchemaError, match=r"'user' has 1 value\(s\) unseen in training, e\.g\. 99"):
        spec.encode_frame(other, unseen="error")


def test_spec_json_round_trip(tmp_path: Path) -> None:
    train = _frame([1, 2, 3], ["x", "y", "x"], [1.0, 2.0, 4.0])
    spec = FeatureSpec.fit(train, SCHEMA, meta={"seed": 3})
    spec.save(tmp_path / "spec.json")
    back = FeatureSpec.load(tmp_path / "spec.json")
    assert back == spec
    pd.testing.assert_frame_equal(back.encode_frame(train), spec.encode_frame(train))


def test_random_split_is_seeded() -> None:
    table = generate(rows=1000).table
    schema = generate(rows=10).schema
    a, b = split_table(table, schema, seed=1), split_table(table, schema, seed=1)
    c = split_table(table, schema, seed=2)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [800, 100, 100]
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k])
    assert not a["test"].equals(c["test"])
    # the three parts partition the rows
    total = pd.concat(a.values()).sort_values(list(table.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(total, table.sort_values(list(table.columns)).reset_index(drop=True))


def test_time_split_orders_by_time() -> None:
    rng = np.random.default_rng(0)
    ts = rng.permutation(100).tolist()
    table = _frame(list(range(100)), ["x"] * 100, [1.0] * 100, ts)
    parts = split_table(table, SCHEMA, kind="time")
    assert parts["train"]["ts"].max() < parts["valid"]["ts"].min()
    assert parts["valid"]["ts"].max() < parts["test"]["ts"].min()
    assert len(parts["train"]) == 80


def test_time_split_needs_time_column() -> None:
    d = generate(rows=50)
    with pytest.raises(SchemaError, match="no time column"):
        split_table(d.table, d.schema, kind="time")
