"""Bring-your-own table: a CSV or parquet file described by a small ``schema.yaml``.

Layout of a source directory::

    my-data/
      schema.yaml     # roles of the columns (below)
      events.parquet  # or events.csv; exactly one data file unless schema.yaml names it with ``file``

``schema.yaml`` keys (loaded strictly: an unknown key is an error naming it)::

    name: my-data               # required
    label: clicked              # required; 0/1 (or bool), or set label_threshold to binarise a rating
    domain: country             # required; raw values mapped to 0..n-1 by sorted order ...
    domain_values: [us, de, fr] # ... or by this list, which is then the known set (others are an error)
    domain_names: [US, DE, FR]  # optional display names, one per domain
    sparse: [user, item, city]  # categorical features
    dense: [price]              # numeric features (NaN allowed; the encoder fills the train mean)
    user: user                  # optional, for descriptions
    item: item                  # optional, for descriptions
    time: ts                    # optional int64 seconds; enables the time split
    file: events.csv            # optional, relative to schema.yaml
    label_threshold: 4          # optional: label = value >= threshold
    sep: ","                    # optional CSV separator
    ranges:                     # optional: inclusive [low, high] per feature/time column (null = open),
      price: [0, null]          #   or per label column when label_threshold is set (its raw values)
    allowed:                    # optional: the only values a feature (or thresholded label) column may hold
      city: [berlin, paris]
    types:                      # optional per sparse column: int (7.0 is read as 7; 7.5 is refused)
      user: int                 #   or str (the text as written: "7.0" stays "7.0")
    max_duplicate_rate: 0.01    # optional: at most this share of rows may repeat an earlier row exactly

``ranges`` and ``allowed`` become the schema's value rules: the data gate checks them as expectations and
loading refuses a table that breaks them, naming the rows. A sparse column read as floats (``7.0``) is refused
naming the file, column, row and value unless ``types`` declares it.

Options ``path=`` (the data file) and ``schema=`` (the YAML file) override the directory layout.

This module also holds the checked readers that the CSV-based adapters (Ali-CCP, KuaiRand) share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mdctr.config import ConfigError, from_dict
from mdctr.data.base import (
    DOMAIN_VALUES,
    DataError,
    DatasetAdapter,
    LoadedDataset,
    register_dataset,
    require_file,
    sniff_file,
    to_binary_label,
)
from mdctr.data.encode import domain_key
from mdctr.schema import FeatureSchema, SourceLines, ValueRule, describe_rows, float_values
from mdctr.schema import plain_value as plain

log = logging.getLogger(__name__)

SCHEMA_FILE = "schema.yaml"
DATA_SUFFIXES = (".parquet", ".csv")


# -- checked readers shared by the file-based adapters ------------------------------------------------------
def read_table_file(
    path: Path, dataset: str, *, sep: str = ",", text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a CSV or parquet file; every failure is a :class:`DataError` naming the file.

    The file's ends are sniffed first (:func:`sniff_file`), so a binary or NUL-filled file is refused in
    bounded memory before pandas sees it. ``text_columns`` of a CSV are read as the text written (``"007"``).
    """
    require_file(path, dataset)
    parquet = path.suffix == ".parquet"
    sniff_file(path, dataset, "parquet" if parquet else "text")
    try:
        if parquet:
            df = pd.read_parquet(path)
        else:
            dtype = dict.fromkeys(text_columns, str) or None
            df = pd.read_csv(path, sep=sep, low_memory=False, dtype=dtype)
    except pd.errors.EmptyDataError:
        raise DataError(f"dataset {dataset!r}: {path} is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(
            f"dataset {dataset!r}: {path} cannot be parsed as {sep!r}-separated CSV: {e}"
        ) from None
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        raise DataError(f"dataset {dataset!r}: {path} cannot be read as parquet: {e}") from None
    if len(df) == 0:
        raise DataError(f"dataset {dataset!r}: {path} has a header but 0 rows; expected at least 1 row")
    return df


def require_columns(df: pd.DataFrame, path: Path, dataset: str, expected: Sequence[str]) -> None:
    """Raise naming the file and the missing columns (with a separator hint when everything is one column)."""
    missing = [c for c in expected if c not in df.columns]
    if missing:
        hint = " (wrong separator? the header was read as a single column)" if df.shape[1] == 1 else ""
        raise DataError(
            f"dataset {dataset!r}: {path} lacks column(s) {missing}{hint}; expected {list(expected)}, "
            f"found {list(df.columns)}"
        )


def numeric_column(
    df: pd.DataFrame, col: str, path: Path, dataset: str, *, integer: bool = False, allow_nan: bool = False
) -> pd.Series:
    """``df[col]`` as numbers (int64 if ``integer``); a non-numeric/non-integer value is a DataError."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & (raw.notna() | (not allow_nan))
    if integer:
        bad |= num.notna() & (num != np.round(num))
    if bad.any():
        what = "integers" if integer else "numbers"
        example = plain(raw[bad].iloc[0])
        raise DataError(
            f"dataset {dataset!r}: {path} column {col!r} expects {what}; found {int(bad.sum())} bad row(s) at "
            f"{describe_rows(bad.to_numpy(), file_rows(path, len(df)))}, "
            f"e.g. {'a missing value' if pd.isna(example) else repr(example)}"
        )
    return num.astype("int64") if integer else num.astype("float64")


def binary_label(df: pd.DataFrame, col: str, path: Path, dataset: str) -> pd.Series:
    """A 0/1 (or boolean) label column as int8; anything else is a DataError naming file and column."""
    raw = df[col]
    num = pd.to_numeric(raw.astype("object").replace({True: 1, False: 0}), errors="coerce")
    bad = ~num.isin([0, 1])
    if bad.any():
        example = plain(raw[bad].iloc[0])
        raise DataError(
            f"dataset {dataset!r}: {path} label column {col!r} must be 0/1; found {int(bad.sum())} row(s) "
            f"with other values at {describe_rows(bad.to_numpy(), file_rows(path, len(df)))}, "
            f"e.g. {'a missing value' if pd.isna(example) else repr(example)}"
        )
    return num.astype("int8")


def file_rows(path: Path, n: int) -> SourceLines:
    """Name the ``n`` data rows of ``path`` ``"<file> row <k>"`` (k from 1, the header not counted)."""
    return SourceLines(path.name, np.arange(1, n + 1), unit="row")


def map_domain(values: pd.Series, known: Sequence[Any], path: Path, dataset: str, col: str) -> np.ndarray:
    """Map raw domain values to their index in ``known``; a value outside it is a DataError.

    Values are compared by their string form so that ``1`` in YAML matches ``"1"`` in a CSV and vice versa.
    Returns int64 [rows].
    """
    if values.isna().any():
        null = values.isna().to_numpy()
        raise DataError(
            f"dataset {dataset!r}: {path} domain column {col!r} has {int(null.sum())} missing value(s) at "
            f"{describe_rows(null, file_rows(path, len(values)))}"
        )
    keys = [domain_key(v) for v in known]
    idx = pd.Index(keys).get_indexer(values.map(domain_key))
    outside = idx < 0
    if outside.any():
        raise DataError(
            f"dataset {dataset!r}: {path} domain column {col!r} must be one of {list(known)}; found "
            f"{int(outside.sum())} row(s) outside, e.g. {plain(values[outside].iloc[0])!r}"
        )
    return idx.astype(np.int64)


def sorted_values(values: pd.Series) -> list[Any]:
    """Distinct values in sorted order (numeric order for numbers, else by string)."""
    uniq = pd.unique(values.dropna())
    try:
        return sorted(uniq.tolist())
    except TypeError:  # mixed types
        return sorted(uniq.tolist(), key=str)


# -- the bring-your-own adapter -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TableSchemaConfig:
    """Contents of ``schema.yaml`` (see module docstring)."""

    name: str
    label: str
    domain: str
    sparse: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    domain_values: tuple[Any, ...] | None = None
    domain_names: tuple[str, ...] | None = None
    user: str | None = None
    item: str | None = None
    time: str | None = None
    file: str | None = None
    label_threshold: float | None = None
    sep: str = ","
    ranges: dict[str, tuple[float | None, float | None]] | None = None
    allowed: dict[str, tuple[Any, ...]] | None = None
    types: dict[str, str] | None = None
    max_duplicate_rate: float | None = None


def load_table_config(path: Path) -> TableSchemaConfig:
    """Strictly load ``schema.yaml``; unknown or missing keys raise :class:`ConfigError` naming them."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"dataset 'table': schema file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    required = ("name", "label", "domain")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing}")
    cfg = from_dict(TableSchemaConfig, data, where=str(path))
    if (
        cfg.domain_names is not None
        and cfg.domain_values is not None
        and len(cfg.domain_names) != len(cfg.domain_values)
    ):
        raise ConfigError(
            f"{path}: domain_names has {len(cfg.domain_names)} entries but domain_values has "
            f"{len(cfg.domain_values)}"
        )
    return cfg


#: values of ``types`` in schema.yaml
ID_TYPES = ("int", "str")


def value_rules(cfg: TableSchemaConfig, schema_path: Path) -> dict[str, ValueRule]:
    """The schema's value rules from ``ranges`` and ``allowed`` in ``schema.yaml``; a rule on a column that
    is not a feature, the time column or (with ``label_threshold``) the label, or a malformed range, is a
    :class:`ConfigError` naming it. A rule on the label applies to its raw values, before the threshold."""
    rated = [cfg.label] if cfg.label_threshold is not None else []
    checked = (*cfg.sparse, *cfg.dense, *([cfg.time] if cfg.time else []), *rated)
    rules: dict[str, ValueRule] = {}
    for key, spec in (("ranges", cfg.ranges or {}), ("allowed", cfg.allowed or {})):
        if not isinstance(spec, dict):
            raise ConfigError(f"{schema_path}: {key} must map column names to values, found {spec!r}")
        for col, value in spec.items():
            if col == cfg.label and not rated:
                raise ConfigError(
                    f"{schema_path}: {key} names the label {col!r}, which must be 0/1 already; a range or set "
                    f"on the label applies to a rating turned into it with label_threshold"
                )
            if col not in checked:
                raise ConfigError(
                    f"{schema_path}: {key} names {col!r}, which is not a sparse, dense, time or thresholded "
                    f"label column ({list(checked)})"
                )
            if key == "ranges":
                if not isinstance(value, list | tuple) or len(value) != 2:
                    raise ConfigError(
                        f"{schema_path}: ranges.{col} must be [low, high] (null = open), found {value!r}"
                    )
                low, high = value
                if any(v is not None and not isinstance(v, int | float) for v in (low, high)):
                    raise ConfigError(
                        f"{schema_path}: ranges.{col} bounds must be numbers or null, found {value!r}"
                    )
                prev = rules.get(col, ValueRule())
                rules[col] = ValueRule(low=low, high=high, allowed=prev.allowed)
            else:
                if not isinstance(value, list | tuple) or not value:
                    raise ConfigError(
                        f"{schema_path}: allowed.{col} must be a non-empty list, found {value!r}"
                    )
                prev = rules.get(col, ValueRule())
                rules[col] = ValueRule(low=prev.low, high=prev.high, allowed=tuple(value))
    return rules


def id_types(cfg: TableSchemaConfig, schema_path: Path) -> dict[str, str]:
    """``types`` from ``schema.yaml``: sparse column → ``"int"`` or ``"str"``; anything else, or a
    ``max_duplicate_rate`` that is not a fraction in [0, 1], is a :class:`ConfigError` naming it."""
    spec = cfg.types or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{schema_path}: types must map sparse columns to int or str, found {spec!r}")
    for col, kind in spec.items():
        if col not in cfg.sparse:
            raise ConfigError(
                f"{schema_path}: types names {col!r}, which is not a sparse column ({list(cfg.sparse)})"
            )
        if kind not in ID_TYPES:
            raise ConfigError(f"{schema_path}: types.{col} must be one of {list(ID_TYPES)}, found {kind!r}")
    rate = cfg.max_duplicate_rate
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
    ):
        raise ConfigError(f"{schema_path}: max_duplicate_rate must be a fraction in [0, 1], found {rate!r}")
    return dict(spec)


def sparse_ids(values: pd.Series, kind: str | None, path: Path, dataset: str, col: str) -> pd.Series:
    """A sparse column's ids as declared by ``types``: ``"int"`` → int64 (integral floats such as ``7.0``
    accepted, others refused), ``"str"`` → the text, undeclared → as read, but floats refused: the value
    ``7.0`` would otherwise become the vocabulary entry ``"7.0"``, apart from ``7``."""
    rows = file_rows(path, len(values))
    if kind == "str":
        return values.astype(str)
    if kind == "int":
        num = pd.to_numeric(values, errors="coerce")
        bad = (num.isna() | (num != np.round(num))).to_numpy()
        if bad.any():
            raise DataError(
                f"dataset {dataset!r}: {path} sparse column {col!r} is declared int; found {int(bad.sum())} "
                f"non-integer value(s) at {describe_rows(bad, rows)}, e.g. {plain(values[bad].iloc[0])!r}"
            )
        return num.astype("int64")
    floats = float_values(values)
    if floats.any():
        raise DataError(
            f"dataset {dataset!r}: {path} sparse column {col!r} holds floats at {describe_rows(floats, rows)}, "
            f"e.g. {plain(values[floats].iloc[0])!r}; ids must be integers or strings: declare "
            f"'types: {{{col}: int}}' in schema.yaml to read integral floats as integers, or "
            f"'types: {{{col}: str}}' to keep the text as written"
        )
    return values


def check_roles(cfg: TableSchemaConfig, schema_path: Path) -> None:
    """Each column has one role; a column listed twice (e.g. the domain also under ``sparse``) is a
    :class:`ConfigError` naming the column, its roles and what to do instead."""
    roles: dict[str, list[str]] = {}
    for role, cols in (
        ("sparse", cfg.sparse),
        ("dense", cfg.dense),
        ("label", (cfg.label,)),
        ("domain", (cfg.domain,)),
        ("time", (cfg.time,) if cfg.time else ()),
    ):
        for col in cols:
            roles.setdefault(col, []).append(role)
    for col, found in roles.items():
        if len(found) < 2:
            continue
        hint = ""
        if "domain" in found:
            # the domain id routes rows (towers, experts) and the raw value stays a request column; a model
            # that should also embed it needs it as a feature of its own
            hint = (
                f"; to use the domain as a feature too, copy the column under another name (e.g. "
                f"{col}_feature) and list that one under {found[0] if found[0] != 'domain' else 'sparse'}"
            )
        raise ConfigError(
            f"{schema_path}: column {col!r} is listed as {' and '.join(found)}; a column has one role{hint}"
        )


@register_dataset("table")
class Table(DatasetAdapter):
    """Options: ``path`` (data file) and ``schema`` (YAML file); both default to the source directory."""

    path_options = ("path", "schema")

    def __init__(self, path: str | Path | None = None, schema: str | Path | None = None, **options: Any):
        if options:
            raise ConfigError(
                f"dataset 'table': unknown option(s) {sorted(options)}; valid: ['path', 'schema']"
            )
        super().__init__(path=path, schema=schema)
        self.path = Path(path) if path is not None else None
        self.schema_path = Path(schema) if schema is not None else None

    def _data_file(self, source: Path, cfg: TableSchemaConfig, schema_path: Path) -> Path:
        if self.path is not None:
            return self.path
        if cfg.file:
            return schema_path.parent / cfg.file
        candidates = sorted(p for p in source.iterdir() if p.suffix in DATA_SUFFIXES)
        if len(candidates) != 1:
            raise DataError(
                f"dataset 'table': {source} must hold exactly one data file ({', '.join(DATA_SUFFIXES)}) or "
                f"{schema_path} must name one with 'file'; found {[p.name for p in candidates]}"
            )
        return candidates[0]

    def dataset_name(self, source: Path) -> str:
        """``name`` from ``schema.yaml`` (so that runs of a table are named after it, not ``table``)."""
        return load_table_config(self.schema_path or Path(source) / SCHEMA_FILE).name

    def load(self, source: Path) -> LoadedDataset:
        schema_path = self.schema_path or source / SCHEMA_FILE
        cfg = load_table_config(schema_path)
        check_roles(cfg, schema_path)
        types = id_types(cfg, schema_path)
        rules = value_rules(cfg, schema_path)
        path = self._data_file(source, cfg, schema_path)
        ds = cfg.name
        texts = [c for c, kind in types.items() if kind == "str"]
        df = read_table_file(path, ds, sep=cfg.sep, text_columns=texts)
        needed = [*cfg.sparse, *cfg.dense, cfg.label, cfg.domain, *([cfg.time] if cfg.time else [])]
        require_columns(df, path, ds, needed)

        out: dict[str, Any] = {}
        rows = file_rows(path, len(df))
        for col in cfg.sparse:
            null = df[col].isna().to_numpy()
            if null.any():
                raise DataError(
                    f"dataset {ds!r}: {path} sparse column {col!r} has {int(null.sum())} missing value(s) at "
                    f"{describe_rows(null, rows)}"
                )
            out[col] = sparse_ids(df[col], types.get(col), path, ds, col)
        for col in cfg.dense:
            out[col] = numeric_column(df, col, path, ds, allow_nan=True).astype("float32")
        if cfg.label_threshold is not None:
            out[cfg.label] = to_binary_label(
                df[cfg.label],
                cfg.label_threshold,
                strict_greater=False,
                where=f"dataset {ds!r}: {path} label column {cfg.label!r}",
                row_labels=rows,
            )
        else:
            out[cfg.label] = binary_label(df, cfg.label, path, ds)

        known = list(cfg.domain_values) if cfg.domain_values is not None else sorted_values(df[cfg.domain])
        out[cfg.domain] = map_domain(df[cfg.domain], known, path, ds, cfg.domain)
        names = cfg.domain_names or tuple(str(v) for v in known)
        if len(names) != len(known):
            raise ConfigError(
                f"{schema_path}: domain_names has {len(names)} entries but the data has {len(known)} domains "
                f"{known}"
            )
        if cfg.time:
            out[cfg.time] = numeric_column(df, cfg.time, path, ds, integer=True)

        raw = None
        if cfg.label in rules:
            # the label's rule (e.g. a 1-5 rating scale) is checked on the values before the threshold
            raw = pd.DataFrame({cfg.label: pd.to_numeric(df[cfg.label], errors="coerce")}).reset_index(
                drop=True
            )
        dup = {} if cfg.max_duplicate_rate is None else {"max_duplicate_rate": float(cfg.max_duplicate_rate)}
        schema = FeatureSchema(
            value_rules=rules,
            raw_columns=(cfg.label,) if raw is not None else (),
            **dup,
            dense_nullable=True,  # empty dense cells are allowed (module docstring)
            name=ds,
            sparse=tuple(cfg.sparse),
            dense=tuple(cfg.dense),
            label=cfg.label,
            domain=cfg.domain,
            domain_names=tuple(str(n) for n in names),
            user=cfg.user,
            item=cfg.item,
            time=cfg.time,
        )
        for role, col in (("user", cfg.user), ("item", cfg.item)):
            if col is not None and col not in schema.columns:
                raise ConfigError(
                    f"{schema_path}: {role} column {col!r} must also be listed in sparse or dense"
                )
        table = pd.DataFrame({c: out[c] for c in schema.columns}).reset_index(drop=True)
        extras = {"source_file": str(path), DOMAIN_VALUES: [plain(v) for v in known]}
        return LoadedDataset(table=table, schema=schema, extras=extras, raw=raw, row_labels=rows)
