"""The feature schema: the one definition of a dataset's columns.

Everything that needs to know which columns exist derives it from a :class:`FeatureSchema`: the loaders,
the encoder, the embedding layer, the Great Expectations suite, the MLflow signature and serving input checks.
Column names are never written as string literals elsewhere.

A dataset adapter turns raw files into a *canonical interaction table*: a pandas DataFrame holding exactly
``schema.columns`` where

* every sparse column holds raw categorical values (ints or strings, never NaN),
* every dense column holds floats,
* the label column holds 0/1 (int8),
* the domain column holds the hand-crafted domain id, an int in ``range(schema.num_domains)``,
* the optional time column holds an int64 timestamp (seconds).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class SchemaError(ValueError):
    """The data does not match its schema; the message names the file, column and expected vs found."""


def plain_value(v: Any) -> Any:
    """A numpy scalar as the Python value, so error messages read ``3`` rather than ``np.int64(3)``."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass(frozen=True)
class DenseRange:
    """Inclusive range a dense feature must lie in (used by validation); None means unbounded."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class FeatureSchema:
    """Columns and roles of one dataset's canonical interaction table.

    Attributes:
        name: dataset name as registered (e.g. ``"ml-1m"``).
        sparse: categorical feature columns, embedded by the models.
        dense: numeric feature columns, standardised by the encoder.
        label: binary target column (0/1).
        domain: hand-crafted domain id column; values in ``range(len(domain_names))``.
        domain_names: human-readable name of each hand-crafted domain, index = domain id.
        user: column identifying the user (for descriptions), or None.
        item: column identifying the item (for descriptions), or None.
        time: int64 timestamp column enabling a time split, or None.
        dense_ranges: allowed range per dense column (validation).
        min_domain_rows: validation: every hand-crafted domain must have at least this many rows.
        max_duplicate_rate: validation: at most this fraction of fully duplicated rows.
    """

    name: str
    sparse: tuple[str, ...]
    dense: tuple[str, ...]
    label: str
    domain: str
    domain_names: tuple[str, ...]
    user: str | None = None
    item: str | None = None
    time: str | None = None
    dense_ranges: dict[str, DenseRange] = field(default_factory=dict)
    min_domain_rows: int = 1
    max_duplicate_rate: float = 0.01

    def __post_init__(self) -> None:
        cols = self.columns
        if len(set(cols)) != len(cols):
            raise SchemaError(f"schema {self.name!r}: a column has two roles: {cols}")
        if not self.domain_names:
            raise SchemaError(f"schema {self.name!r}: at least one domain name is required")
        unknown = set(self.dense_ranges) - set(self.dense)
        if unknown:
            raise SchemaError(f"schema {self.name!r}: dense_ranges names non-dense columns {sorted(unknown)}")

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    @property
    def features(self) -> tuple[str, ...]:
        """Model input columns (sparse then dense); the domain id is not a feature."""
        return self.sparse + self.dense

    @property
    def columns(self) -> tuple[str, ...]:
        """All columns of the canonical table, in canonical order."""
        extra = (self.time,) if self.time else ()
        return self.sparse + self.dense + (self.label, self.domain) + extra

    @property
    def serving_columns(self) -> tuple[str, ...]:
        """Columns a serving request carries: the features plus the hand-crafted domain id."""
        return self.features + (self.domain,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dense_ranges"] = {k: asdict(v) for k, v in self.dense_ranges.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSchema:
        d = dict(d)
        for key in ("sparse", "dense", "domain_names"):
            d[key] = tuple(d.get(key, ()))
        d["dense_ranges"] = {k: DenseRange(**v) for k, v in (d.get("dense_ranges") or {}).items()}
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def check_table(self, df: Any, source: str) -> None:
        """Raise :class:`SchemaError` if ``df`` lacks a column of this schema or has wrong basic types.

        ``source`` names the file or step the table came from, for the message.
        """
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(
                f"{source}: missing column(s) {missing}; expected {list(self.columns)}, found {list(df.columns)}"
            )
        if len(df) == 0:
            raise SchemaError(f"{source}: table is empty (0 rows); expected at least 1 row")
        for col in self.sparse + (self.label, self.domain):
            n_null = int(df[col].isna().sum())
            if n_null:
                raise SchemaError(f"{source}: column {col!r} has {n_null} null value(s); expected none")
        bad_label = ~df[self.label].isin([0, 1])
        if bad_label.any():
            raise SchemaError(
                f"{source}: column {self.label!r} must be 0/1; found {int(bad_label.sum())} row(s) with "
                f"other values, e.g. {plain_value(df.loc[bad_label, self.label].iloc[0])!r}"
            )
        dom = df[self.domain]
        bad_dom = ~dom.isin(list(range(self.num_domains)))
        if bad_dom.any():
            raise SchemaError(
                f"{source}: column {self.domain!r} must be in 0..{self.num_domains - 1}; found "
                f"{int(bad_dom.sum())} row(s) outside, e.g. {plain_value(dom[bad_dom].iloc[0])!r}"
            )
