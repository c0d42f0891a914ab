"""The reference a window is compared with: the serving version's training data (a prepared-data directory).

Prepared sparse columns hold *encoded* ids (``1..V``, 0 = OOV; :class:`mdctr.data.encode.FeatureSpec`), so the
monitor compares in encoded space: a logged raw value is encoded with the same spec, an unseen value becoming 0,
which gives the out-of-vocabulary share directly. Dense columns are standardised in prepared data; logged dense
values are standardised with the spec's train mean/std exactly as the encoder does (float32, NaN → 0), so a
discrete feature (ML-1M's age codes) lands in the same bins on both sides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mdctr.data.encode import FeatureSpec
from mdctr.data.prepare import SPEC_FILE
from mdctr.monitoring.stats import Quantiles, Reservoir
from mdctr.schema import SchemaError

log = logging.getLogger(__name__)

#: the mine_domains step's codes file (``codes.npz`` with train/valid/test code arrays)
CODES_FILE = "codes.npz"


@dataclass(frozen=True)
class Reference:
    """Counts and samples of the training data.

    Attributes:
        spec: the fitted feature spec (vocabularies, dense mean/std, schema).
        rows: train rows.
        sparse_counts: per sparse column, counts [V+1] of encoded ids on train (index 0 = OOV, 0 on train).
        baseline_oov: per sparse column, the OOV share of the valid split: the rate of unseen ids a fresh
            sample of the same data already has (new users, new items); a window is judged against it.
        dense_sample: per dense column, a reservoir sample of standardised train values (float64).
        dense_bins: per dense column, reference-quantile bins.
        domain_counts: train rows per hand-crafted domain [num_domains].
        mined_counts: train rows per mined code [num_codes], or None when no reference codes were given.
        mined_source: where ``mined_counts`` came from (a path), or "".
    """

    spec: FeatureSpec
    rows: int
    sparse_counts: dict[str, np.ndarray]
    baseline_oov: dict[str, float]
    dense_sample: dict[str, np.ndarray]
    dense_bins: dict[str, Quantiles]
    domain_counts: np.ndarray
    mined_counts: np.ndarray | None = None
    mined_source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def with_mined(self, counts: np.ndarray, source: str) -> Reference:
        from dataclasses import replace

        return replace(self, mined_counts=np.asarray(counts, dtype=np.int64), mined_source=source)


def load_reference(
    prepared_dir: Path | str, *, sample_size: int = 200_000, bins: int = 10, seed: int = 0
) -> Reference:
    """Read ``train.parquet`` (record batch by record batch) and ``valid.parquet`` of a prepared directory."""
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / SPEC_FILE).is_file():
        raise FileNotFoundError(
            f"{prepared_dir}: not a prepared-data directory (no {SPEC_FILE}); expected the output of "
            "`mdctr data prepare` (train.parquet, valid.parquet, feature_spec.json)"
        )
    spec = FeatureSpec.load(prepared_dir / SPEC_FILE)
    sch = spec.schema
    sizes = dict(zip(sch.sparse, spec.vocab_sizes, strict=True))
    counts = {c: np.zeros(sizes[c], dtype=np.int64) for c in sch.sparse}
    samples = {c: Reservoir(sample_size, seed=seed + i) for i, c in enumerate(sch.dense)}
    domains = np.zeros(sch.num_domains, dtype=np.int64)
    rows = 0
    train = pq.ParquetFile(prepared_dir / "train.parquet")
    for batch in train.iter_batches(batch_size=1 << 16, columns=[*sch.sparse, *sch.dense, sch.domain]):
        rows += batch.num_rows
        for c in sch.sparse:
            counts[c] += np.bincount(batch.column(c).to_numpy(), minlength=sizes[c])[: sizes[c]]
        for c in sch.dense:
            samples[c].add(batch.column(c).to_numpy(zero_copy_only=False))
        domains += np.bincount(batch.column(sch.domain).to_numpy(), minlength=sch.num_domains)[
            : sch.num_domains
        ]
    baseline = _valid_oov(prepared_dir / "valid.parquet", spec)
    dense_sample = {c: r.sample() for c, r in samples.items()}
    log.info("reference: %d train rows from %s", rows, prepared_dir)
    return Reference(
        spec=spec,
        rows=rows,
        sparse_counts=counts,
        baseline_oov=baseline,
        dense_sample=dense_sample,
        dense_bins={c: Quantiles.from_sample(v, bins) for c, v in dense_sample.items()},
        domain_counts=domains,
        meta={"prepared_dir": str(prepared_dir)},
    )


def _valid_oov(path: Path, spec: FeatureSpec) -> dict[str, float]:
    if not path.is_file():
        return {c: 0.0 for c in spec.schema.sparse}
    table = pq.read_table(path, columns=list(spec.schema.sparse))
    n = max(table.num_rows, 1)
    return {c: float((table.column(c).to_numpy() == 0).sum()) / n for c in spec.schema.sparse}


def mined_counts_from_codes(path: Path | str) -> np.ndarray:
    """Train rows per mined code from a ``mine_domains`` output directory (or its ``codes.npz``)."""
    path = Path(path)
    path = path / CODES_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no mined codes; expected the mine_domains step's {CODES_FILE}")
    with np.load(path, allow_pickle=False) as codes:  # never unpickle what a shared store holds
        if "train" not in codes.files:
            raise SchemaError(
                f"{path}: array 'train' missing; expected train/valid/test, found {codes.files}"
            )
        train = np.asarray(codes["train"], dtype=np.int64)
    return np.bincount(train) if len(train) else np.zeros(1, dtype=np.int64)
