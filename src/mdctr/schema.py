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

Allowed raw values (rating scales, age codes, id ranges) are declared here too, as :class:`ValueRule` per
column: the data gate derives its range/set expectations from them and :meth:`FeatureSchema.check_table`
enforces them, so a rating of 9 can never silently become a positive label. Columns that exist only in the raw
files (e.g. the ML-1M rating, replaced by the label) are listed in ``raw_columns``; the adapter hands them over in
:attr:`mdctr.data.base.LoadedDataset.raw`, aligned row by row with the canonical table.
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


def describe_rows(mask: Any, labels: Any = None, limit: int = 5, total: int | None = None) -> str:
    """Name the rows where boolean ``mask`` is true: ``"row 3, row 7 (and 12 more)"``.

    ``labels`` (same length as ``mask``) names each row, e.g. a :class:`SourceLines` (``"ratings.dat lines 3,
    7"``); without it rows are numbered from 1 in table order. ``total``: how many rows are bad in all, when
    ``mask`` marks only some of them.
    """
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    total = len(idx) if total is None else total
    more = f" (and {total - min(limit, len(idx))} more)" if total > min(limit, len(idx)) else ""
    if isinstance(labels, SourceLines):
        nums = ", ".join(str(int(labels.lines[i])) for i in idx[:limit])
        return f"{labels.file} {labels.unit}{'s' if total > 1 else ''} {nums}{more}"
    if labels is None:
        names = [f"row {i + 1}" for i in idx[:limit]]
    else:
        names = [str(labels[int(i)]) for i in idx[:limit]]
    return ", ".join(names) + more


@dataclass(frozen=True, eq=False)
class SourceLines:
    """Row names ``"<file> line <n>"`` for a table read from one file; ``lines`` holds each row's 1-based line
    (or, with ``unit="row"``, matrix row) number, int array [rows]. Names are built only for rows a message
    shows."""

    file: str
    lines: Any
    unit: str = "line"

    def __getitem__(self, i: int) -> str:
        return f"{self.file} {self.unit} {int(self.lines[i])}"

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(frozen=True)
class ValueRule:
    """Allowed raw values of one column: an inclusive range and/or an explicit set (None = unconstrained)."""

    low: float | None = None
    high: float | None = None
    allowed: tuple[Any, ...] | None = None

    def describe(self) -> str:
        parts = []
        if self.allowed is not None:
            parts.append(f"one of {list(self.allowed)}")
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{plain_value(self.low):g}"
            hi = "inf" if self.high is None else f"{plain_value(self.high):g}"
            parts.append(f"within [{lo}, {hi}]")
        return " and ".join(parts) or "any value"

    def violations(self, values: Any) -> Any:
        """Boolean mask (numpy) of the non-null values that break this rule."""
        import pandas as pd

        s = pd.Series(values).reset_index(drop=True)
        bad = np.zeros(len(s), dtype=bool)
        present = s.notna().to_numpy()
        if self.allowed is not None:
            bad |= present & ~s.isin(list(self.allowed)).to_numpy()
        if self.low is not None or self.high is not None:
            num = pd.to_numeric(s, errors="coerce")
            nonnum = present & num.isna().to_numpy()
            lo = -np.inf if self.low is None else self.low
            hi = np.inf if self.high is None else self.high
            bad |= nonnum | (present & ~nonnum & ~num.between(lo, hi).to_numpy())
        return bad


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
        value_rules: allowed raw values per column (canonical or raw); the gate's range/set expectations.
        raw_columns: columns of the raw files that the canonical table drops (e.g. a rating turned into the
            label); the gate checks them from ``LoadedDataset.raw``.
        dense_nullable: dense columns may hold NaN (the encoder fills the train mean); otherwise the gate
            expects no missing dense value.
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
    value_rules: dict[str, ValueRule] = field(default_factory=dict)
    raw_columns: tuple[str, ...] = ()
    dense_nullable: bool = False

    def __post_init__(self) -> None:
        cols = self.columns
        if len(set(cols)) != len(cols):
            raise SchemaError(f"schema {self.name!r}: a column has two roles: {cols}")
        if not self.domain_names:
            raise SchemaError(f"schema {self.name!r}: at least one domain name is required")
        unknown = set(self.dense_ranges) - set(self.dense)
        if unknown:
            raise SchemaError(f"schema {self.name!r}: dense_ranges names non-dense columns {sorted(unknown)}")
        clash = set(self.raw_columns) & set(cols)
        if clash:
            raise SchemaError(f"schema {self.name!r}: raw_columns {sorted(clash)} are also canonical columns")
        unknown = set(self.value_rules) - set(cols) - set(self.raw_columns)
        if unknown:
            raise SchemaError(
                f"schema {self.name!r}: value_rules names unknown column(s) {sorted(unknown)}; "
                f"known: {list(cols) + list(self.raw_columns)}"
            )

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
        d["value_rules"] = {
            k: {**asdict(v), "allowed": None if v.allowed is None else list(v.allowed)}
            for k, v in self.value_rules.items()
        }
        d["raw_columns"] = list(self.raw_columns)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSchema:
        d = dict(d)
        for key in ("sparse", "dense", "domain_names"):
            d[key] = tuple(d.get(key, ()))
        d["dense_ranges"] = {k: DenseRange(**v) for k, v in (d.get("dense_ranges") or {}).items()}
        d["raw_columns"] = tuple(d.get("raw_columns") or ())
        d["value_rules"] = {
            k: ValueRule(
                low=v.get("low"),
                high=v.get("high"),
                allowed=None if v.get("allowed") is None else tuple(v["allowed"]),
            )
            for k, v in (d.get("value_rules") or {}).items()
        }
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def check_table(self, df: Any, source: str, *, raw: Any = None, row_labels: Any = None) -> None:
        """Raise :class:`SchemaError` if ``df`` lacks a column of this schema, has nulls where none are allowed,
        a label outside 0/1, an unknown domain id, or a value breaking :attr:`value_rules` (checked on ``raw``
        for :attr:`raw_columns`).

        ``source`` names the file or step the table came from; ``row_labels`` (one per row, e.g. ``"line 7"``)
        names offending rows in the message (default: row numbers from 1).
        """
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(
                f"{source}: missing column(s) {missing}; expected {list(self.columns)}, found {list(df.columns)}"
            )
        if len(df) == 0:
            raise SchemaError(f"{source}: table is empty (0 rows); expected at least 1 row")
        for col in self.sparse + (self.label, self.domain):
            null = df[col].isna().to_numpy()
            if null.any():
                raise SchemaError(
                    f"{source}: column {col!r} has {int(null.sum())} missing value(s) at "
                    f"{describe_rows(null, row_labels)}; expected none"
                )
        bad_label = (~df[self.label].isin([0, 1])).to_numpy()
        if bad_label.any():
            raise SchemaError(
                f"{source}: column {self.label!r} must be 0/1; found {int(bad_label.sum())} row(s) with "
                f"other values at {describe_rows(bad_label, row_labels)}, "
                f"e.g. {plain_value(df[self.label].to_numpy()[bad_label][0])!r}"
            )
        for col, rule in self.value_rules.items():
            frame = raw if col in self.raw_columns else df
            if frame is None or col not in frame.columns:
                if col in self.raw_columns:
                    raise SchemaError(f"{source}: raw column {col!r} was not handed over for its value check")
                continue
            bad = rule.violations(frame[col])
            if bad.any():
                raise SchemaError(
                    f"{source}: column {col!r} must be {rule.describe()}; found {int(bad.sum())} row(s) outside "
                    f"at {describe_rows(bad, row_labels)}, e.g. {plain_value(frame[col].to_numpy()[bad][0])!r}"
                )
        bad_dom = (~df[self.domain].isin(list(range(self.num_domains)))).to_numpy()
        if bad_dom.any():
            raise SchemaError(
                f"{source}: column {self.domain!r} must be in 0..{self.num_domains - 1}; found "
                f"{int(bad_dom.sum())} row(s) outside at {describe_rows(bad_dom, row_labels)}, "
                f"e.g. {plain_value(df[self.domain].to_numpy()[bad_dom][0])!r}"
            )
