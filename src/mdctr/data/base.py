"""Dataset adapters: raw files in, one canonical interaction table plus its :class:`FeatureSchema` out."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mdctr.registry import Registry
from mdctr.schema import FeatureSchema, SchemaError

log = logging.getLogger(__name__)


class DataError(SchemaError):
    """Raw input cannot be read as the dataset it claims to be (names file, column, expected vs found)."""


@dataclass(frozen=True)
class LoadedDataset:
    """A canonical table and its schema; ``extras`` holds adapter-specific arrays (e.g. planted domains)."""

    table: pd.DataFrame
    schema: FeatureSchema
    extras: dict[str, Any]


class DatasetAdapter(ABC):
    """Reads one dataset's raw files from a source directory.

    Subclasses set ``name`` and implement :meth:`load`. Options (e.g. synthetic sizes) arrive as keyword
    arguments to the constructor so that the CLI and the pipeline can pass them as plain values.
    """

    name: str = ""
    #: path of this dataset's files relative to the datasets root (``DATASETS_DIR``)
    default_subdir: str = ""
    #: False for generated datasets (synthetic), which ignore the source directory
    needs_source: bool = True

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def load(self, source: Path) -> LoadedDataset:
        """Read raw files under ``source`` into a canonical table; raise :class:`DataError` on bad input."""

    def resolve_source(self, source: Path) -> Path:
        """Accept either the dataset's own directory or the datasets root that contains it."""
        source = Path(source)
        if self.default_subdir and (source / self.default_subdir).is_dir():
            return source / self.default_subdir
        return source


_REGISTRY: Registry[type[DatasetAdapter]] = Registry("dataset")


def register_dataset(name: str) -> Callable[[type[DatasetAdapter]], type[DatasetAdapter]]:
    """Class decorator: register a dataset adapter under ``name``."""
    return _REGISTRY.register(name)


def dataset_names() -> list[str]:
    return _REGISTRY.names()


def get_dataset(name: str, **options: Any) -> DatasetAdapter:
    return _REGISTRY.get(name)(**options)


def load_dataset(name: str, source: Path | str, **options: Any) -> LoadedDataset:
    """Load a registered dataset from ``source`` and check the table against its schema."""
    adapter = get_dataset(name, **options)
    src = adapter.resolve_source(Path(source))
    if adapter.needs_source and not src.exists():
        raise DataError(f"dataset {name!r}: source {src} does not exist")
    loaded = adapter.load(src)
    loaded.schema.check_table(loaded.table, f"dataset {name!r} from {src}")
    log.info("loaded %s: %d rows from %s", name, len(loaded.table), src)
    return loaded


def require_file(path: Path, dataset: str) -> Path:
    if not path.is_file():
        raise DataError(f"dataset {dataset!r}: required file {path} not found")
    if path.stat().st_size == 0:
        raise DataError(f"dataset {dataset!r}: file {path} is empty (0 bytes)")
    return path


def to_binary_label(values: pd.Series, threshold: float, *, strict_greater: bool, where: str) -> pd.Series:
    """Map a numeric rating column to 0/1; a non-numeric value is an error naming ``where``."""
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna()
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(f"{where}: {int(bad.sum())} non-numeric value(s), e.g. {example!r}; expected numbers")
    out = (num > threshold) if strict_greater else (num >= threshold)
    return out.astype("int8")
