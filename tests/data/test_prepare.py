"""Prepared data on disk: round trip, and nothing half-written when writing fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdctr.data.encode import FeatureSpec
from mdctr.data.prepare import SPEC_FILE, read_prepared, write_prepared
from mdctr.data.synthetic import generate


def test_round_trip(tmp_path: Path) -> None:
    loaded = generate(rows=2000, num_domains=3)
    spec = write_prepared(loaded, tmp_path / "prep", seed=4)
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == sorted(
        ["train.parquet", "valid.parquet", "test.parquet", SPEC_FILE]
    )
    data = read_prepared(tmp_path / "prep")
    assert data.spec == spec
    assert len(data.train) + len(data.valid) + len(data.test) == 2000
    assert data.train.sparse.shape == (1600, 4) and data.train.dense.dtype == torch.float32
    assert int(data.test.sparse.max()) < max(spec.vocab_sizes)
    assert torch.equal(data.train.domain, data.train.handcrafted)


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = generate(rows=500)
    target = tmp_path / "prep"

    def boom(self: FeatureSpec, path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FeatureSpec, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_prepared(loaded, target)
    assert list(tmp_path.iterdir()) == []  # no target and no temporary sibling


def test_failure_keeps_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "prep"
    write_prepared(generate(rows=500), target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def boom(self: FeatureSpec, path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FeatureSpec, "save", boom)
    with pytest.raises(OSError):
        write_prepared(generate(rows=800, seed=1), target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prep"]
