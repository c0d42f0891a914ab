"""The streaming reader: every row once per epoch across ranks and shards, seeded order, bounded memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mdctr.data.prepare import encode_splits
from mdctr.data.stream import ParquetStream, parquet_rows
from mdctr.data.synthetic import generate
from mdctr.data.tensors import TensorData
from mdctr.schema import FeatureSchema


def _write_shards(
    root: Path, rows: int, shards: int, row_group: int, seed: int = 3
) -> tuple[FeatureSchema, list[Path]]:
    """Encoded synthetic train rows in ``shards`` files; dense column 0 holds the row number (a row id)."""
    spec, encoded = encode_splits(generate(rows=rows, num_sparse=2, num_dense=1, vocab_size=30, seed=seed))
    frame = encoded["train"].reset_index(drop=True)
    frame[spec.schema.dense[0]] = np.arange(len(frame), dtype=np.float32)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        path = root / f"part-{i:03d}.parquet"
        pq.write_table(
            pa.Table.from_pandas(frame.iloc[part], preserve_index=False), path, row_group_size=row_group
        )
        paths.append(path)
    return spec.schema, paths


def _ids(data: TensorData) -> list[int]:
    return data.dense[:, 0].to(torch.int64).tolist()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureSchema, list[Path], int]:
    schema, paths = _write_shards(tmp_path_factory.mktemp("shards"), rows=6000, shards=3, row_group=250)
    return schema, paths, parquet_rows(paths)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_exactly_once_per_epoch_across_ranks_and_shards(shards, world: int) -> None:
    schema, paths, n = shards
    for epoch in (0, 1):
        seen: list[int] = []
        steps = []
        for rank in range(world):
            stream = ParquetStream(
                paths, schema, batch_size=128, window_rows=700, seed=5, rank=rank, world_size=world
            )
            batches = list(stream.batches(epoch))
            steps.append(len(batches))
            for b in batches:
                seen += _ids(b.data)
        assert sorted(seen) == list(range(n)), f"epoch {epoch}, world {world}"
        # every rank steps the same number of times, or an all-reduce would wait for a rank that has finished
        assert steps == [ParquetStream(paths, schema, batch_size=128).num_batches()] * world


def test_ranks_together_see_exactly_the_single_process_batches(shards) -> None:
    schema, paths, _ = shards
    single = list(ParquetStream(paths, schema, batch_size=100, window_rows=500, seed=1).batches(0))
    ranks = [
        list(
            ParquetStream(
                paths, schema, batch_size=100, window_rows=500, seed=1, rank=r, world_size=2
            ).batches(0)
        )
        for r in range(2)
    ]
    for i, whole in enumerate(single):
        parts = ranks[0][i], ranks[1][i]
        assert all(p.global_rows == len(whole.data) for p in parts)
        assert sorted(_ids(parts[0].data) + _ids(parts[1].data)) == sorted(_ids(whole.data))


def test_order_is_seeded_shuffled_across_shards_and_differs_per_epoch(shards) -> None:
    schema, paths, n = shards

    def order(seed: int, epoch: int) -> list[int]:
        stream = ParquetStream(paths, schema, batch_size=256, window_rows=1000, seed=seed)
        return [i for b in stream.batches(epoch) for i in _ids(b.data)]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    # shard order is shuffled too: the first window does not come from the first file only
    first = order(0, 0)[:1000]
    assert len({i * 3 // n for i in first}) > 1
    # evaluation order: file order, unpermuted
    plain = ParquetStream(paths, schema, batch_size=256, shuffle=False)
    assert [i for b in plain.batches(0) for i in _ids(b.data)] == list(range(n))


def test_memory_is_bounded_by_the_window_not_the_split(tmp_path: Path) -> None:
    schema, paths = _write_shards(tmp_path / "big", rows=150_000, shards=4, row_group=2000)
    split_bytes = sum(pq.read_table(p).nbytes for p in paths)
    stream = ParquetStream(paths, schema, batch_size=512, window_rows=8000, seed=0)
    base = pa.total_allocated_bytes()
    peak_arrow = 0
    biggest = 0
    rows = 0
    for b in stream.batches(0):
        peak_arrow = max(peak_arrow, pa.total_allocated_bytes() - base)
        biggest = max(biggest, len(b.data))
        rows += len(b.data)
    assert rows == len(stream) > 100_000
    assert biggest <= 512
    # arrow holds at most a window (+ one row group) at a time: well under a tenth of the split
    assert peak_arrow < split_bytes / 10, (peak_arrow, split_bytes)
    # the in-memory windows the reader yields from are views of one window, never of the whole split
    window = next(stream._windows(0))
    assert 8000 <= len(window) < 8000 + 2000


def test_domain_fn_routes_each_window_and_keeps_handcrafted(shards) -> None:
    schema, paths, _ = shards
    stream = ParquetStream(
        paths, schema, batch_size=64, seed=0, domain_fn=lambda d: torch.zeros(len(d), dtype=torch.int64)
    )
    b = next(stream.batches(0)).data
    assert int(b.domain.abs().sum()) == 0
    assert int(b.handcrafted.max()) > 0


def test_bad_inputs_name_the_problem(shards, tmp_path: Path) -> None:
    schema, paths, _ = shards
    with pytest.raises(FileNotFoundError, match="nope"):
        ParquetStream(tmp_path / "nope.parquet", schema, batch_size=8)
    with pytest.raises(ValueError, match="rank 2"):
        ParquetStream(paths, schema, batch_size=8, rank=2, world_size=2)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), bad)
    with pytest.raises(ValueError, match="lack the schema's columns"):
        ParquetStream(bad, schema, batch_size=8)
