"""Streaming input: mini-batches read from parquet shards with bounded memory (for splits larger than RAM).

:class:`ParquetStream` reads an encoded split (``train.parquet`` as written by :mod:`mdctr.data.prepare`, or a
directory / list of parquet shards with the same columns) through ``pyarrow.dataset``. The unit of reading is one
parquet *row group*; only row-group metadata is read up front, never the rows.

One epoch, for a given ``(seed, epoch)``:

1. the row groups of all shards are put in a seeded random order (shard order shuffling);
2. consecutive row groups are read into a *window* of at least ``window_rows`` rows, the window is permuted
   (shuffling within a window), and rows left over from the previous window are put in front;
3. the window is cut into **global batches** of ``batch_size`` rows (the last batch of the epoch may be shorter);
4. rank ``r`` of ``world_size`` keeps rows ``r, r + w, r + 2w, …`` of every global batch.

So every rank steps through the same number of batches (no rank waits on an all-reduce the others never make),
the union of the ranks' batches is exactly the global batch of a one-process run with the same seed, and every
row is seen exactly once per epoch across ranks. Each rank decodes every window (rows, not files, are sharded),
which keeps the batches identical to one process at the cost of reading the split once per rank.

Memory: at most two windows (the one being cut into batches and the next, read in a background thread) plus
one batch of carried-over rows are held at a time; a window is ``window_rows`` rows plus at most one row group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from mdctr.data.tensors import TensorData
from mdctr.schema import FeatureSchema

log = logging.getLogger(__name__)
_FIELDS = ("sparse", "dense", "domain", "label", "handcrafted")

#: maps a window's rows (``domain`` = hand-crafted id) to their routing domain [N] int64 (mined codes, zeros)
DomainFn = Callable[[TensorData], torch.Tensor]


@dataclass(frozen=True)
class StreamBatch:
    """One step of one rank.

    Attributes:
        data: this rank's rows of the global batch (``data.batch(0, len(data))`` is the model's input).
        global_rows: rows in the global batch across all ranks (for averaging the loss over the global batch).
    """

    data: TensorData
    global_rows: int


def _parquet_files(source: Path | str | Sequence[Path | str]) -> list[str]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            files = sorted(str(f) for f in p.rglob("*.parquet"))
            if not files:
                raise FileNotFoundError(f"no parquet shards under {p}")
            return files
        if not p.is_file():
            raise FileNotFoundError(f"parquet source {p} does not exist")
        return [str(p)]
    files = [str(Path(f)) for f in source]
    if not files:
        raise ValueError("parquet source is an empty list of shards")
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"parquet shard {f} does not exist")
    return files


def parquet_rows(source: Path | str | Sequence[Path | str]) -> int:
    """Rows in a parquet file / shard directory / shard list, from metadata only."""
    return sum(
        frag.metadata.num_rows
        for frag in pads.dataset(_parquet_files(source), format="parquet").get_fragments()
    )


def table_to_tensors(table: pa.Table, schema: FeatureSchema) -> TensorData:
    """An encoded arrow table → :class:`TensorData` (``domain`` and ``handcrafted`` = the table's domain id)."""
    n = table.num_rows

    def matrix(cols: Sequence[str], dtype: type) -> np.ndarray:
        if not cols:
            return np.zeros((n, 0), dtype=dtype)
        return np.stack([table.column(c).to_numpy().astype(dtype, copy=False) for c in cols], axis=1)

    dom = torch.from_numpy(table.column(schema.domain).to_numpy().astype(np.int64))
    return TensorData(
        sparse=torch.from_numpy(np.ascontiguousarray(matrix(schema.sparse, np.int64))),
        dense=torch.from_numpy(np.ascontiguousarray(matrix(schema.dense, np.float32))),
        domain=dom,
        label=torch.from_numpy(table.column(schema.label).to_numpy().astype(np.float32)),
        handcrafted=dom.clone(),
    )


def rows(data: TensorData, start: int, stop: int, step: int = 1) -> TensorData:
    """Rows ``start:stop:step`` of ``data`` as views (step 1) or strided views (a rank's share of a batch)."""
    return TensorData(*(getattr(data, f)[start:stop:step] for f in _FIELDS))


def _cat(parts: list[TensorData]) -> TensorData:
    if len(parts) == 1:
        return parts[0]
    return TensorData(*(torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS))


def _stride(data: TensorData, rank: int, world: int) -> TensorData:
    return data if world == 1 else rows(data, rank, len(data), world)


def _prefetch(windows: Iterator[TensorData]) -> Iterator[TensorData]:
    """Yield from ``windows`` while its next item is read in one background thread.

    Parquet decoding and the numpy/torch conversions release the GIL, so reading overlaps training when a core is
    free; at most one window beyond the one being consumed is held.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-stream") as pool:
        pending = pool.submit(next, windows, None)
        while (window := pending.result()) is not None:
            pending = pool.submit(next, windows, None)
            yield window


class ParquetStream:
    """Seeded, windowed, rank-sharded batches over parquet shards (see the module docstring).

    Args:
        source: a parquet file, a directory of shards (searched recursively), or a list of shard paths.
        schema: the dataset's feature schema (which columns are sparse, dense, label, domain).
        batch_size: rows per *global* batch (all ranks together).
        window_rows: rows read and shuffled together; bounds memory (plus one row group).
        seed: with the epoch number, fixes shard order and in-window permutations.
        rank, world_size: this process's share of every global batch.
        shuffle: False reads row groups in file order, unpermuted (for evaluation).
        domain_fn: maps each window to its routing domain (e.g. a miner's codes); None keeps the hand-crafted id.
    """

    def __init__(
        self,
        source: Path | str | Sequence[Path | str],
        schema: FeatureSchema,
        *,
        batch_size: int,
        window_rows: int = 1 << 18,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        domain_fn: DomainFn | None = None,
    ) -> None:
        if batch_size < 1 or window_rows < 1:
            raise ValueError(f"batch_size and window_rows must be >= 1; got {batch_size}, {window_rows}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range(world_size={world_size})")
        self.files = _parquet_files(source)
        self.schema = schema
        self.batch_size, self.window_rows, self.seed = batch_size, window_rows, seed
        self.rank, self.world_size, self.shuffle, self.domain_fn = rank, world_size, shuffle, domain_fn
        self._columns = [*schema.sparse, *schema.dense, schema.label, schema.domain]
        dataset = pads.dataset(self.files, format="parquet")
        missing = sorted(set(self._columns) - set(dataset.schema.names))
        if missing:
            raise ValueError(f"parquet shards {self.files[:3]}… lack the schema's columns {missing}")
        # (fragment, row group) units with their sizes: metadata only, no rows are read here
        self._units: list[tuple[pads.ParquetFileFragment, int]] = []
        for frag in dataset.get_fragments():
            for rg in frag.split_by_row_group():
                self._units.append((rg, rg.row_groups[0].num_rows))
        self.num_rows = sum(n for _, n in self._units)
        largest = max((n for _, n in self._units), default=0)
        if largest > window_rows:
            # a row group is read whole: it, not the window, then bounds memory
            log.warning(
                "parquet row groups of up to %d rows exceed window_rows=%d; rewrite the shards with smaller "
                "row groups to bound memory by the window",
                largest,
                window_rows,
            )

    def __len__(self) -> int:
        return self.num_rows

    def num_batches(self) -> int:
        """Steps per epoch (the same on every rank)."""
        return -(-self.num_rows // self.batch_size)

    def _windows(self, epoch: int) -> Iterator[TensorData]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self._units)) if self.shuffle else np.arange(len(self._units))
        pending: list[pa.Table] = []
        count = 0
        for i in order:
            frag, n = self._units[int(i)]
            pending.append(frag.to_table(columns=self._columns))
            count += n
            if count >= self.window_rows:
                yield self._window(pending, rng)
                pending, count = [], 0
        if pending:
            yield self._window(pending, rng)

    def _window(self, tables: list[pa.Table], rng: np.random.Generator) -> TensorData:
        data = table_to_tensors(pa.concat_tables(tables), self.schema)
        if self.shuffle:
            data = data.take(torch.from_numpy(rng.permutation(len(data))))
        if self.domain_fn is not None:
            data = data.with_domain(self.domain_fn(data))
        return data

    def batches(self, epoch: int = 0) -> Iterator[StreamBatch]:
        """This rank's batches of one epoch, in order (the next window is read in a background thread)."""
        carry: TensorData | None = None
        for window in _prefetch(self._windows(epoch)):
            data = window if carry is None else _cat([carry, window])
            full = len(data) - len(data) % self.batch_size
            for start in range(0, full, self.batch_size):
                glob = rows(data, start, start + self.batch_size)
                yield StreamBatch(_stride(glob, self.rank, self.world_size), self.batch_size)
            carry = rows(data, full, len(data)) if full < len(data) else None
        if carry is not None:
            yield StreamBatch(_stride(carry, self.rank, self.world_size), len(carry))

    def head(self, n: int) -> TensorData:
        """The first ``n`` rows in file order (for FLOP counting or normalisation recalibration)."""
        parts: list[pa.Table] = []
        count = 0
        for frag, k in self._units:
            if count >= n:
                break
            parts.append(frag.to_table(columns=self._columns))
            count += k
        data = table_to_tensors(pa.concat_tables(parts), self.schema).head(n)
        return data if self.domain_fn is None else data.with_domain(self.domain_fn(data))
