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
from mdctr.schema import FeatureSchema, SchemaError, describe_rows, plain_value

log = logging.getLogger(__name__)


#: ``LoadedDataset.extras`` key: the raw domain values in id order (id i = value i), when the adapter maps a raw
#: column to domain ids (the table adapter); serving then accepts these raw values (``FeatureSpec.domain_values``)
DOMAIN_VALUES = "domain_values"


class DataError(SchemaError):
    """Raw input cannot be read as the dataset it claims to be (names file, column, expected vs found)."""


@dataclass(frozen=True)
class LoadedDataset:
    """A canonical table and its schema; ``extras`` holds adapter-specific arrays (e.g. planted domains).

    ``raw`` holds the schema's ``raw_columns`` (values as read, before e.g. a rating became the label), one row
    per table row; ``row_labels`` names each table row by its place in the raw files (``"ratings.dat line 7"``)
    so that validation messages point at the line to fix. Both are None when the adapter has none.
    """

    table: pd.DataFrame
    schema: FeatureSchema
    extras: dict[str, Any]
    raw: pd.DataFrame | None = None
    row_labels: Any = None


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
    #: options that name files outside the source directory (a pipeline run refuses them: its tasks read the
    #: fetched, versioned copy of the source, never a path elsewhere)
    path_options: tuple[str, ...] = ()

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def load(self, source: Path) -> LoadedDataset:
        """Read raw files under ``source`` into a canonical table; raise :class:`DataError` on bad input."""

    def dataset_name(self, source: Path) -> str:
        """The name outputs carry (MLflow run names): the registered name, or the data's own (a table's
        ``schema.yaml`` ``name``)."""
        return self.name

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


def load_dataset(name: str, source: Path | str, *, check: bool = True, **options: Any) -> LoadedDataset:
    """Load a registered dataset from ``source`` and check the table against its schema.

    ``check=False`` skips the schema check (the data gate does so, to report every violation at once through
    its expectations instead of stopping at the first).
    """
    adapter = get_dataset(name, **options)
    src = adapter.resolve_source(Path(source))
    if adapter.needs_source and not src.exists():
        raise DataError(f"dataset {name!r}: source {src} does not exist")
    loaded = adapter.load(src)
    if check:
        try:
            loaded.schema.check_table(
                loaded.table, f"dataset {name!r} from {src}", raw=loaded.raw, row_labels=loaded.row_labels
            )
        except DataError:
            raise
        except SchemaError as e:  # a value the raw files should not hold: a data error like any other
            raise DataError(str(e)) from None
    log.info("loaded %s: %d rows from %s", name, len(loaded.table), src)
    return loaded


def require_file(path: Path, dataset: str) -> Path:
    if not path.is_file():
        raise DataError(f"dataset {dataset!r}: required file {path} not found")
    if path.stat().st_size == 0:
        raise DataError(f"dataset {dataset!r}: file {path} is empty (0 bytes)")
    return path


#: bytes read from each end of a file to tell what it is before a parser sees it
SNIFF_BYTES = 64 * 1024
PARQUET_MAGIC = b"PAR1"


def sniff_file(path: Path, dataset: str, kind: str) -> None:
    """Refuse a file whose first and last :data:`SNIFF_BYTES` bytes show it is not ``kind``: ``"parquet"``
    without the ``PAR1`` magic at both ends, or ``"text"`` (CSV) holding a NUL byte or starting with ``PAR1``.

    Reads at most 2 × 64 KiB whatever the file's size, so a 1 GB file of NUL bytes is refused at once instead
    of being handed to pandas (which read such a file as one 1 GB line: 7.5 GB of memory and 29 s before
    "0 rows"). A text file with NUL bytes only in its middle still reaches the parser.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
        tail_at = max(size - SNIFF_BYTES, len(head))
        f.seek(tail_at)
        tail = f.read(SNIFF_BYTES)
    where = f"dataset {dataset!r}: {path}"
    if kind == "parquet":
        end = (head + tail)[-4:]
        if not head.startswith(PARQUET_MAGIC) or end != PARQUET_MAGIC:
            nul = " (a file of NUL bytes?)" if not (head + tail).strip(b"\0") else ""
            raise DataError(
                f"{where} is not a parquet file: it starts with {head[:8]!r} and ends with {end!r}, expected "
                f"the magic bytes {PARQUET_MAGIC!r} at both ends{nul}"
            )
        return
    if head.startswith(PARQUET_MAGIC):
        raise DataError(
            f"{where} is a parquet file (it starts with {PARQUET_MAGIC!r}), not CSV: name it *.parquet"
        )
    for offset, chunk in ((0, head), (tail_at, tail)):
        nul = chunk.find(b"\0")
        if nul >= 0:
            share = chunk.count(b"\0") / len(chunk)
            raise DataError(
                f"{where} is not a text (CSV) file: byte {offset + nul} is NUL (0x00), as are "
                f"{share:.0%} of the {len(chunk)} bytes read there (a binary file?)"
            )


def to_binary_label(
    values: pd.Series, threshold: float, *, strict_greater: bool, where: str, row_labels: Any = None
) -> pd.Series:
    """Map a numeric rating column to 0/1; a missing or non-numeric value is an error naming ``where`` and
    the rows (``row_labels``, default row numbers from 1)."""
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna().to_numpy()
    if bad.any():
        example = plain_value(values.to_numpy()[bad][0])
        shown = "a missing value" if pd.isna(example) else repr(example)
        raise DataError(
            f"{where}: {int(bad.sum())} missing or non-numeric value(s) at {describe_rows(bad, row_labels)}, "
            f"e.g. {shown}; expected numbers"
        )
    out = (num > threshold) if strict_greater else (num >= threshold)
    return out.astype("int8")
