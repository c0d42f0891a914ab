"""Prepared data on disk: ``train/valid/test.parquet`` (encoded) + ``feature_spec.json``.

Written atomically by :func:`write_prepared`; read back as tensors by :func:`read_prepared`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mdctr.data.base import DOMAIN_VALUES, LoadedDataset
from mdctr.data.encode import SPLIT_NAMES, FeatureSpec, SplitKind, split_table
from mdctr.io import atomic_dir

if TYPE_CHECKING:  # torch (~3 s to import) only where tensors are built: the prepare task writes parquet only
    from mdctr.data.tensors import TensorData

log = logging.getLogger(__name__)
SPEC_FILE = "feature_spec.json"


@dataclass(frozen=True)
class PreparedData:
    """Encoded splits as tensors plus the fitted spec."""

    spec: FeatureSpec
    train: TensorData
    valid: TensorData
    test: TensorData

    def split(self, name: str) -> TensorData:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def encode_splits(
    loaded: LoadedDataset, *, split: SplitKind = "random", seed: int = 0
) -> tuple[FeatureSpec, dict[str, pd.DataFrame]]:
    """Split, fit the spec on train only, and encode every split."""
    schema = loaded.schema
    parts = split_table(loaded.table, schema, kind=split, seed=seed)
    meta: dict[str, Any] = {"split": split, "seed": seed, "rows": {k: len(v) for k, v in parts.items()}}
    if loaded.extras.get(DOMAIN_VALUES) is not None:
        # what serving maps a request's raw domain value with (kept in the bundle's feature_spec.json)
        meta[DOMAIN_VALUES] = list(loaded.extras[DOMAIN_VALUES])
    spec = FeatureSpec.fit(parts["train"], schema, meta=meta)
    encoded = {k: spec.encode_frame(v, source=f"{schema.name}/{k}") for k, v in parts.items()}
    return spec, encoded


def prepare_in_memory(loaded: LoadedDataset, *, split: SplitKind = "random", seed: int = 0) -> PreparedData:
    from mdctr.data.tensors import TensorData

    spec, encoded = encode_splits(loaded, split=split, seed=seed)
    return PreparedData(spec, *(TensorData.from_frame(encoded[k], spec.schema) for k in SPLIT_NAMES))


def write_prepared(
    loaded: LoadedDataset, out: Path | str, *, split: SplitKind = "random", seed: int = 0
) -> FeatureSpec:
    t0 = time.perf_counter()
    spec, encoded = encode_splits(loaded, split=split, seed=seed)
    with atomic_dir(out) as tmp:
        for name in SPLIT_NAMES:
            # row groups of 64Ki rows: the unit a streaming reader (mdctr.data.stream) reads at a time
            encoded[name].to_parquet(tmp / f"{name}.parquet", index=False, row_group_size=1 << 16)
        spec.save(tmp / SPEC_FILE)
    log.info("prepared %s into %s in %.1fs", spec.schema.name, out, time.perf_counter() - t0)
    return spec


def read_prepared(path: Path | str) -> PreparedData:
    from mdctr.data.tensors import TensorData

    path = Path(path)
    spec = FeatureSpec.load(path / SPEC_FILE)
    splits = [TensorData.from_frame(pd.read_parquet(path / f"{k}.parquet"), spec.schema) for k in SPLIT_NAMES]
    return PreparedData(spec, *splits)
