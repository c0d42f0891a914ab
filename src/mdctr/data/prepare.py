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


@dataclass(frozen=True)
class Periods:
    """Time periods of a time split (:func:`mdctr.data.encode.split_table`): ``train_window`` and
    ``eval_period`` spans (``"7d"``, ``"10%"``) or None (every older row / the newest 20% of rows)."""

    train_window: str | None = None
    eval_period: str | None = None

    def meta(self) -> dict[str, str]:
        return {
            k: v for k, v in (("train_window", self.train_window), ("eval_period", self.eval_period)) if v
        }


def encode_splits(
    loaded: LoadedDataset,
    *,
    split: SplitKind = "random",
    seed: int = 0,
    periods: Periods = Periods(),
    base_spec: FeatureSpec | None = None,
) -> tuple[FeatureSpec, dict[str, pd.DataFrame]]:
    """Split, fit the spec on train only, and encode every split.

    ``periods``: the time split's train window and eval period. ``base_spec``: a warm start's older spec: the
    fitted spec is :meth:`FeatureSpec.extended_with` onto it (older indices and dense scalers kept).
    """
    schema = loaded.schema
    parts = split_table(
        loaded.table,
        schema,
        kind=split,
        seed=seed,
        train_window=periods.train_window,
        eval_period=periods.eval_period,
    )
    meta: dict[str, Any] = {"split": split, "seed": seed, "rows": {k: len(v) for k, v in parts.items()}}
    meta.update(periods.meta())
    if loaded.extras.get(DOMAIN_VALUES) is not None:
        # what serving maps a request's raw domain value with (kept in the bundle's feature_spec.json)
        meta[DOMAIN_VALUES] = list(loaded.extras[DOMAIN_VALUES])
    spec = FeatureSpec.fit(parts["train"], schema, meta=meta)
    if base_spec is not None:
        spec = base_spec.extended_with(spec)
    encoded = {k: spec.encode_frame(v, source=f"{schema.name}/{k}") for k, v in parts.items()}
    return spec, encoded


def prepare_in_memory(
    loaded: LoadedDataset,
    *,
    split: SplitKind = "random",
    seed: int = 0,
    periods: Periods = Periods(),
    base_spec: FeatureSpec | None = None,
) -> PreparedData:
    """:func:`encode_splits` as tensors (nothing written)."""
    from mdctr.data.tensors import TensorData

    spec, encoded = encode_splits(loaded, split=split, seed=seed, periods=periods, base_spec=base_spec)
    return PreparedData(spec, *(TensorData.from_frame(encoded[k], spec.schema) for k in SPLIT_NAMES))


def write_prepared(
    loaded: LoadedDataset,
    out: Path | str,
    *,
    split: SplitKind = "random",
    seed: int = 0,
    periods: Periods = Periods(),
) -> FeatureSpec:
    t0 = time.perf_counter()
    spec, encoded = encode_splits(loaded, split=split, seed=seed, periods=periods)
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


def extend_prepared(prepared: PreparedData, base: FeatureSpec) -> PreparedData:
    """``prepared`` re-encoded under ``base.extended_with(prepared.spec)`` (a warm start's spec), from its
    encoded tensors: sparse indices are mapped to the extended vocabularies, dense values re-scaled with
    ``base``'s mean/std. Data already encoded that way (``encode_splits(base_spec=base)``) is returned as is.

    Limits of working from encoded data: a valid/test value outside ``prepared``'s train vocabulary stays OOV
    even when ``base`` knows it, and a missing dense value (encoded as the newer train mean) becomes that mean
    under ``base``'s scaler. Preparing with ``base_spec`` avoids both.
    """
    import torch

    from mdctr.data.tensors import TensorData

    spec = prepared.spec
    base.check_compatible(spec)
    if _extends(spec, base):
        return prepared
    merged = base.extended_with(spec)
    maps = [torch.from_numpy(merged.index_map(c, spec)) for c in spec.schema.sparse]
    new_mean = torch.tensor([spec.mean[c] for c in spec.schema.dense], dtype=torch.float64)
    new_std = torch.tensor([spec.std[c] for c in spec.schema.dense], dtype=torch.float64)
    old_mean = torch.tensor([base.mean[c] for c in spec.schema.dense], dtype=torch.float64)
    old_std = torch.tensor([base.std[c] for c in spec.schema.dense], dtype=torch.float64)

    def remap(data: TensorData) -> TensorData:
        sparse = (
            torch.stack([m[data.sparse[:, j]] for j, m in enumerate(maps)], dim=1) if maps else data.sparse
        )
        raw = data.dense.double() * new_std + new_mean
        dense = ((raw - old_mean) / old_std).float()
        return TensorData(sparse.reshape(data.sparse.shape), dense, data.domain, data.label, data.handcrafted)

    log.info(
        "re-encoded prepared data onto the warm start's vocabularies (its ids kept first: %s)",
        merged.meta["base_vocab"],
    )
    return PreparedData(merged, remap(prepared.train), remap(prepared.valid), remap(prepared.test))


def _extends(spec: FeatureSpec, base: FeatureSpec) -> bool:
    """Whether ``spec`` already holds ``base``'s vocabularies as prefixes and its dense scalers."""
    return (
        all(spec.vocab[c][: len(base.vocab[c])] == base.vocab[c] for c in base.schema.sparse)
        and spec.mean == base.mean
        and spec.std == base.std
        and list(spec.schema.sparse) == list(base.schema.sparse)
    )
