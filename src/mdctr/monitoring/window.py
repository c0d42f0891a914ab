"""Accumulating a log window batch by batch: counts, fixed-size samples and the labelled rows.

Memory is flat in the window's rows: per sparse column a count vector of its vocabulary size, per dense column
a fixed bin histogram and a reservoir sample, domain counts, and a bottom-k sample of rows for the Great
Expectations checkpoint. Only rows that found a label (``--labels``) are kept individually (prediction, label,
domains, time bucket: 25 bytes a row), because AUC needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mdctr.data.encode import domain_key
from mdctr.monitoring.logsource import DOMAIN, MINED_DOMAIN, PREDICTION, REQUEST_ID, SERVED_AT
from mdctr.monitoring.reference import Reference
from mdctr.monitoring.stats import Reservoir, RowSample

BUCKET_MS = {"day": 86_400_000, "hour": 3_600_000}


@dataclass(frozen=True)
class LabelledRows:
    """The window's rows that found a label: prediction [N] float64, label [N] int8, hand-crafted domain [N]
    int32 (−1: unknown), mined code [N] int32 (−1: none), time bucket start [N] int64 (ms since epoch, UTC)."""

    prediction: np.ndarray
    label: np.ndarray
    domain: np.ndarray
    mined: np.ndarray
    bucket: np.ndarray


class WindowStats:
    """Streaming accumulator of one window against a :class:`Reference` (call :meth:`add` per record batch)."""

    def __init__(
        self,
        ref: Reference,
        *,
        sample_size: int = 20_000,
        gx_rows: int = 20_000,
        labels: pd.Series | None = None,
        bucket: str = "day",
        seed: int = 0,
    ) -> None:
        sch = ref.spec.schema
        self.ref = ref
        self.rows = 0
        # vocabularies as strings: the log holds sparse values as str(value), whatever the id type
        self.vocab = {c: pa.array([str(v) for v in ref.spec.vocab[c]], pa.string()) for c in sch.sparse}
        self.sparse_counts = {c: np.zeros(len(ref.spec.vocab[c]) + 1, dtype=np.int64) for c in sch.sparse}
        self.dense_counts = {c: np.zeros(ref.dense_bins[c].num_bins, dtype=np.int64) for c in sch.dense}
        self.dense_nulls = dict.fromkeys(sch.dense, 0)
        self.dense_sample = {c: Reservoir(sample_size, seed=seed + 100 + i) for i, c in enumerate(sch.dense)}
        self.domain_counts = np.zeros(sch.num_domains, dtype=np.int64)
        self.domain_unknown = 0
        self.mined_counts = np.zeros(0, dtype=np.int64)
        self.mined_rows = 0
        self.gx_sample = RowSample(gx_rows, seed=seed + 7)
        self.labels = labels
        self.label_index = None if labels is None else pd.Index(labels.index)
        self.label_values = None if labels is None else labels.to_numpy()
        self.bucket_ms = BUCKET_MS[bucket]
        self.labelled: list[tuple[np.ndarray, ...]] = []
        self.served_min: int | None = None
        self.served_max: int | None = None
        values = ref.spec.domain_values
        self.domain_keys = None if values is None else pa.array([domain_key(v) for v in values], pa.string())

    @property
    def columns(self) -> list[str]:
        """Log columns this accumulator reads."""
        sch = self.ref.spec.schema
        return [*sch.sparse, *sch.dense, sch.domain, REQUEST_ID, SERVED_AT, DOMAIN, MINED_DOMAIN, PREDICTION]

    def add(self, batch: pa.RecordBatch) -> None:
        sch = self.ref.spec.schema
        n = batch.num_rows
        self.rows += n
        for c in sch.sparse:
            self.sparse_counts[c] += np.bincount(self._encode(batch, c), minlength=len(self.sparse_counts[c]))
        for c in sch.dense:
            z = self._standardise(batch, c)
            self.dense_counts[c] += self.ref.dense_bins[c].counts(z)
            self.dense_sample[c].add(z)
        domain = self._domains(batch)
        known = domain >= 0
        self.domain_counts += np.bincount(domain[known], minlength=sch.num_domains)[: sch.num_domains]
        self.domain_unknown += int((~known).sum())
        mined = _ints(batch.column(MINED_DOMAIN))
        has = mined >= 0
        if has.any():
            counts = np.bincount(mined[has])
            size = max(len(counts), len(self.mined_counts))
            self.mined_counts = np.pad(self.mined_counts, (0, size - len(self.mined_counts)))
            self.mined_counts[: len(counts)] += counts
            self.mined_rows += int(has.sum())
        served = batch.column(SERVED_AT).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        served_np = served.to_numpy(zero_copy_only=False)
        lo, hi = int(served_np.min()), int(served_np.max())
        self.served_min = lo if self.served_min is None else min(self.served_min, lo)
        self.served_max = hi if self.served_max is None else max(self.served_max, hi)
        self.gx_sample.add(self._gx_batch(batch))
        if self.labels is not None:
            self._join_labels(batch, domain, mined, served_np)

    # -- per column ---------------------------------------------------------------------------------------
    def _encode(self, batch: pa.RecordBatch, col: str) -> np.ndarray:
        """Encoded ids [n] int64 (0 = OOV, null counted as OOV) of a logged sparse column."""
        values = batch.column(col)
        if values.type != pa.string():
            values = values.cast(pa.string())
        idx = pc.index_in(values, value_set=self.vocab[col])
        return pc.fill_null(pc.add(idx, 1), 0).to_numpy().astype(np.int64)

    def _standardise(self, batch: pa.RecordBatch, col: str) -> np.ndarray:
        """Standardised values [n] float64 of a logged dense column, computed as the encoder does (float32, NaN
        → 0, i.e. the train mean), so equal raw values land in the same bin as the reference's."""
        values = batch.column(col)
        x = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        self.dense_nulls[col] += int(values.null_count)
        spec = self.ref.spec
        z = ((x - spec.mean[col]) / spec.std[col]).astype(np.float32)
        return np.nan_to_num(z, nan=0.0).astype(np.float64)

    def _domains(self, batch: pa.RecordBatch) -> np.ndarray:
        """Hand-crafted domain id [n] int64 per row: ``mdctr_domain`` where set, else the request's own domain
        column mapped to its id; −1 where neither gives a known id."""
        routed = _ints(batch.column(DOMAIN))
        missing = routed < 0
        if not missing.any():
            return routed
        raw = batch.column(self.ref.spec.schema.domain)
        if self.domain_keys is not None:
            # raw domain values (a table with its own domain column): logged as str(value), matched as strings
            own = pc.fill_null(pc.index_in(raw.cast(pa.string()), value_set=self.domain_keys), -1)
            own = own.to_numpy().astype(np.int64)
        else:
            num = pc.cast(raw, pa.int64(), safe=False) if pa.types.is_integer(raw.type) else _parse_ints(raw)
            own = pc.fill_null(num, -1).to_numpy().astype(np.int64)
            own[(own < 0) | (own >= self.ref.spec.schema.num_domains)] = -1
        return np.where(missing, own, routed)

    def _gx_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The columns the GX checkpoint sees: features, and the domain column when requests carried it."""
        sch = self.ref.spec.schema
        carried = batch.column(sch.domain).null_count < batch.num_rows
        return batch.select([*sch.sparse, *sch.dense, *([sch.domain] if carried else [])])

    def _join_labels(
        self, batch: pa.RecordBatch, domain: np.ndarray, mined: np.ndarray, served: np.ndarray
    ) -> None:
        assert self.label_index is not None and self.label_values is not None
        ids = batch.column(REQUEST_ID).to_numpy(zero_copy_only=False)
        pos = self.label_index.get_indexer(ids)
        hit = pos >= 0
        if not hit.any():
            return
        pred = batch.column(PREDICTION).cast(pa.float64()).to_numpy(zero_copy_only=False)
        self.labelled.append(
            (
                pred[hit],
                self.label_values[pos[hit]].astype(np.int8),
                domain[hit].astype(np.int32),
                mined[hit].astype(np.int32),
                served[hit] // self.bucket_ms * self.bucket_ms,
            )
        )

    def labelled_rows(self) -> LabelledRows | None:
        if self.labels is None:
            return None
        parts = list(zip(*self.labelled, strict=True)) if self.labelled else [[np.empty(0)]] * 5
        arrays = [np.concatenate(p) for p in parts]
        return LabelledRows(
            prediction=arrays[0].astype(np.float64),
            label=arrays[1].astype(np.int8),
            domain=arrays[2].astype(np.int32),
            mined=arrays[3].astype(np.int32),
            bucket=arrays[4].astype(np.int64),
        )


def _ints(column: pa.Array) -> np.ndarray:
    """A nullable integer column → int64 [n] with −1 for null."""
    return pc.fill_null(column.cast(pa.int64()), -1).to_numpy().astype(np.int64)


def _parse_ints(column: pa.Array) -> pa.Array:
    """A string column of integer ids → int64 with null where a value is not an integer."""
    strings = column.cast(pa.string())
    ok = pc.match_substring_regex(strings, r"^-?\d+$")
    return pc.if_else(ok, pc.cast(pc.if_else(ok, strings, "0"), pa.int64()), pa.scalar(None, pa.int64()))
