"""Encoding: vocabularies and scalers fitted on the train split only, splits, and the JSON feature spec.

The :class:`FeatureSpec` is what serving loads to encode raw rows exactly as training did. Sparse values map
to indices ``1..V`` (0 is the out-of-vocabulary bucket); dense values are standardised with the train mean
and standard deviation; NaN dense values become 0 after scaling (the train mean).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mdctr.data.base import DOMAIN_VALUES
from mdctr.schema import FeatureSchema, SchemaError, plain_value

OOV_INDEX = 0
SPEC_VERSION = 1
SplitKind = Literal["random", "time"]
SPLIT_NAMES = ("train", "valid", "test")


class SpecMismatch(SchemaError):
    """Two feature specs whose data cannot share vocabularies (:meth:`FeatureSpec.check_compatible`)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Fitted encoding of a schema: per sparse column its vocabulary, per dense column mean and std.

    ``vocab[col]`` lists the raw values seen in train; the value at position i encodes to index i + 1.
    ``kinds[col]`` is ``"int"`` or ``"str"``: how raw values are cast before lookup.
    """

    schema: FeatureSchema
    vocab: dict[str, list[Any]]
    kinds: dict[str, str]
    mean: dict[str, float]
    std: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Embedding table size per sparse column (vocabulary + the OOV bucket), in schema order."""
        return tuple(len(self.vocab[c]) + 1 for c in self.schema.sparse)

    @property
    def num_dense(self) -> int:
        return len(self.schema.dense)

    @property
    def domain_values(self) -> list[Any] | None:
        """The raw domain values in id order (``meta["domain_values"]``), when the data had a raw domain column
        (the table adapter); None when the domain id is derived (e.g. ML-1M's age groups)."""
        values = self.meta.get(DOMAIN_VALUES)
        return list(values) if values is not None else None

    def raw_domains(self, ids: np.ndarray) -> np.ndarray:
        """Domain ids [N] → what a request carries in the domain column: the raw values when known, else the
        ids themselves (int64)."""
        values = self.domain_values
        ids = np.asarray(ids, dtype=np.int64)
        if values is None:
            return ids
        return np.asarray(values, dtype=object)[ids]

    # -- fitting ------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, train: pd.DataFrame, schema: FeatureSchema, meta: dict[str, Any] | None = None
    ) -> FeatureSpec:
        vocab: dict[str, list[Any]] = {}
        kinds: dict[str, str] = {}
        for col in schema.sparse:
            values = train[col]
            kind = "int" if pd.api.types.is_integer_dtype(values) else "str"
            uniq = pd.unique(values if kind == "int" else values.astype(str))
            uniq = np.sort(uniq)
            vocab[col] = [int(v) for v in uniq] if kind == "int" else [str(v) for v in uniq]
            kinds[col] = kind
        mean: dict[str, float] = {}
        std: dict[str, float] = {}
        for col in schema.dense:
            x = pd.to_numeric(train[col], errors="coerce").astype("float64")
            m = float(np.nanmean(x)) if x.notna().any() else 0.0
            s = float(np.nanstd(x)) if x.notna().any() else 1.0
            mean[col], std[col] = m, (s if s > 1e-12 else 1.0)
        return cls(schema=schema, vocab=vocab, kinds=kinds, mean=mean, std=std, meta=dict(meta or {}))

    def extended_with(self, newer: FeatureSpec) -> FeatureSpec:
        """This (older) spec with ``newer``'s unseen values appended: the spec of a warm-started model.

        Every value this spec knows keeps its index (so the older model's embedding rows stay valid); values
        only ``newer`` knows get the next indices, in ``newer``'s order; values that left are kept. Dense
        scalers are this spec's (kept, not refitted): the older model's first layers were trained on inputs
        scaled that way. ``meta`` is ``newer``'s plus ``base_vocab`` (per column, how many values came from
        this spec). Raises :class:`SchemaError` naming what differs when the two schemas do not match.
        """
        self.check_compatible(newer)
        vocab: dict[str, list[Any]] = {}
        for col in self.schema.sparse:
            known = set(self.vocab[col])
            vocab[col] = list(self.vocab[col]) + [v for v in newer.vocab[col] if v not in known]
        meta = {**newer.meta, "base_vocab": {c: len(self.vocab[c]) for c in self.schema.sparse}}
        return FeatureSpec(
            schema=newer.schema,
            vocab=vocab,
            kinds=dict(self.kinds),
            mean=dict(self.mean),
            std=dict(self.std),
            meta=meta,
        )

    def check_compatible(self, other: FeatureSpec) -> None:
        """Raise :class:`SpecMismatch` (a :class:`SchemaError`) naming the first difference that stops ``other``'s
        data from being encoded with this spec's vocabularies: columns, roles, domains, or how ids are typed."""
        a, b = self.schema, other.schema
        for what, x, y in (
            ("sparse columns", a.sparse, b.sparse),
            ("dense columns", a.dense, b.dense),
            ("label", a.label, b.label),
            ("domain column", a.domain, b.domain),
            ("number of domains", a.num_domains, b.num_domains),
            ("id types", self.kinds, other.kinds),
        ):
            if x != y:
                raise SpecMismatch(f"feature specs differ in their {what}: {x!r} (older) vs {y!r} (newer)")

    def index_map(self, col: str, newer: FeatureSpec) -> np.ndarray:
        """[len(newer.vocab[col]) + 1] int64: ``newer``'s index of each value of ``col`` → this spec's index
        (0 → 0; a value this spec lacks → 0, OOV)."""
        idx = pd.Index(self.vocab[col]).get_indexer(pd.Index(newer.vocab[col]))
        return np.concatenate([[OOV_INDEX], np.where(idx >= 0, idx + 1, OOV_INDEX)]).astype(np.int64)

    # -- encoding -----------------------------------------------------------------------------------------
    def encode_frame(
        self,
        df: pd.DataFrame,
        *,
        source: str = "input",
        unseen: Literal["oov", "error"] = "oov",
        require_label: bool = True,
    ) -> pd.DataFrame:
        """Encode raw rows to model inputs (same column names; sparse → int64 index, dense → float32).

        ``unseen="error"`` rejects sparse values not in the vocabulary (serving's strict mode).
        With ``require_label=False`` the label column may be absent (serving).
        """
        sch = self.schema
        needed = list(sch.features) + [sch.domain] + ([sch.label] if require_label else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise SchemaError(f"{source}: missing column(s) {missing}; expected {needed}")
        out: dict[str, Any] = {}
        for col in sch.sparse:
            raw = df[col]
            if self.kinds[col] == "int":
                num = pd.to_numeric(raw, errors="coerce")
                bad = num.isna() | (num != np.floor(num.fillna(0)))
                if bad.any():
                    raise SchemaError(
                        f"{source}: column {col!r} expects integer ids; found {int(bad.sum())} bad value(s), "
                        f"e.g. {raw[bad].iloc[0]!r}"
                    )
                keys = num.astype("int64")
            else:
                if raw.isna().any():
                    raise SchemaError(f"{source}: column {col!r} has {int(raw.isna().sum())} null value(s)")
                keys = raw.astype(str)
            idx = pd.Index(self.vocab[col]).get_indexer(keys)
            if unseen == "error" and (idx < 0).any():
                first = plain_value(keys[idx < 0].iloc[0])
                raise SchemaError(
                    f"{source}: column {col!r} has {int((idx < 0).sum())} value(s) unseen in training, "
                    f"e.g. {first!r}"
                )
            out[col] = (idx + 1).astype("int64")  # -1 (unseen) → 0 = OOV_INDEX
        for col in sch.dense:
            x = pd.to_numeric(df[col], errors="coerce")
            bad = x.isna() & df[col].notna()
            if bad.any():
                raise SchemaError(
                    f"{source}: column {col!r} expects numbers; found {int(bad.sum())} non-numeric value(s), "
                    f"e.g. {df[col][bad].iloc[0]!r}"
                )
            out[col] = ((x.astype("float64") - self.mean[col]) / self.std[col]).fillna(0.0).astype("float32")
        dom = pd.to_numeric(df[sch.domain], errors="coerce")
        bad = ~dom.isin(list(range(sch.num_domains)))
        if bad.any():
            raise SchemaError(
                f"{source}: column {sch.domain!r} must be one of 0..{sch.num_domains - 1}; found "
                f"{int(bad.sum())} row(s) outside, e.g. {plain_value(df[sch.domain][bad].iloc[0])!r}"
            )
        out[sch.domain] = dom.astype("int64")
        if sch.label in df.columns:
            out[sch.label] = df[sch.label].astype("float32")
        return pd.DataFrame(out, index=df.index)

    def lookup_encoder(self) -> LookupEncoder:
        """The serving encoder: lookup tables built once from this spec (see :class:`LookupEncoder`)."""
        return LookupEncoder.from_spec(self)

    # -- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "schema": self.schema.to_dict(),
            "vocab": self.vocab,
            "kinds": self.kinds,
            "mean": self.mean,
            "std": self.std,
            "meta": self.meta,
        }

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path | str) -> FeatureSpec:
        d = json.loads(Path(path).read_text())
        if d.get("version") != SPEC_VERSION:
            raise SchemaError(f"{path}: feature spec version {d.get('version')!r}; expected {SPEC_VERSION}")
        return cls(
            schema=FeatureSchema.from_dict(d["schema"]),
            vocab=d["vocab"],
            kinds=d["kinds"],
            mean=d["mean"],
            std=d["std"],
            meta=d.get("meta", {}),
        )


def domain_key(value: Any) -> str:
    """The form raw domain values are matched by: their string form, so that ``1`` in YAML matches ``"1"`` in a
    CSV, and ``3.0`` (an int column that held a NaN elsewhere) matches ``3``."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def check_split(schema: FeatureSchema, kind: str) -> None:
    """Raise a :class:`SchemaError` when ``kind`` cannot split ``schema``'s data (unknown kind; ``time`` without
    a time column), before any data is read."""
    if kind not in ("random", "time"):
        raise SchemaError(f"split {kind!r} is unknown; expected 'random' or 'time'")
    if kind == "time" and not schema.time:
        raise SchemaError(
            f"dataset {schema.name!r} has no time column, so it cannot be split by time; use the random split "
            "(or, for your own table, name its int64 seconds column with 'time: <column>' in schema.yaml)"
        )


#: a span of time: a number and a unit (``s``, ``m``, ``h``, ``d``, ``w``) or a percentage of the time range
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|%)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Span:
    """A length of time: ``seconds`` (``7d``, ``36h``) or a ``fraction`` of the data's time range (``10%``)."""

    text: str
    seconds: float | None = None
    fraction: float | None = None

    def length(self, time_range: float) -> float:
        """The span in seconds, for data whose times cover ``time_range`` seconds."""
        return self.seconds if self.seconds is not None else float(self.fraction or 0.0) * time_range


def parse_span(text: str, *, option: str = "span") -> Span:
    """``"7d"`` / ``"36h"`` / ``"90m"`` / ``"3600s"`` / ``"2w"`` / ``"10%"`` → :class:`Span`; anything else raises
    a :class:`SchemaError` naming ``option`` and the accepted forms."""
    m = _SPAN.match(str(text))
    if m is None:
        raise SchemaError(
            f"{option} {text!r} is not a span: expected a number with a unit s/m/h/d/w (e.g. '7d', '36h') "
            "or a percentage of the time range (e.g. '10%')"
        )
    value, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        if not 0 < value < 100:
            raise SchemaError(f"{option} {text!r}: a percentage must be above 0 and below 100")
        return Span(str(text), fraction=value / 100.0)
    if value <= 0:
        raise SchemaError(f"{option} {text!r}: must be longer than 0")
    return Span(str(text), seconds=value * _UNIT_SECONDS[unit])


def check_periods(
    schema: FeatureSchema, kind: str, train_window: str | None, eval_period: str | None
) -> None:
    """Raise a :class:`SchemaError` when periods (``train_window``/``eval_period``) cannot apply: a random split
    or data without a time column; and when a span does not parse. Nothing is read."""
    if not (train_window or eval_period):
        return
    given = "--train-window" if train_window else "--eval-period"
    if not schema.time:
        raise SchemaError(
            f"{given} needs time-stamped data, but dataset {schema.name!r} has no time column (for your own "
            "table, name its int64 seconds column with 'time: <column>' in schema.yaml)"
        )
    if kind != "time":
        raise SchemaError(
            f"{given} selects periods by time, so it cannot be used with the {kind!r} split; use the time split"
        )
    for option, text in (("--train-window", train_window), ("--eval-period", eval_period)):
        if text:
            parse_span(text, option=option)


def _period_order(
    times: np.ndarray, train_window: str | None, eval_period: str | None, name: str
) -> dict[str, np.ndarray]:
    """Row positions per split, each in time order: eval = the last ``eval_period`` of time (default: the
    newest 20% of rows), halved by rows into valid (older half) and test (newer half); train = the
    ``train_window`` before the eval period (default: every older row)."""
    order = np.argsort(times, kind="stable")
    t = times[order].astype(np.float64)
    t_min, t_max = float(t[0]), float(t[-1])
    if eval_period:
        start = t_max - parse_span(eval_period, option="--eval-period").length(t_max - t_min)
        first_eval = int(np.searchsorted(t, start, side="left"))
    else:
        first_eval = len(t) - int(round(0.2 * len(t)))
    first_train = 0
    if train_window and first_eval < len(t):
        window = parse_span(train_window, option="--train-window").length(t_max - t_min)
        first_train = int(np.searchsorted(t, t[first_eval] - window, side="left"))
    half = first_eval + (len(t) - first_eval) // 2
    cuts = {"train": order[first_train:first_eval], "valid": order[first_eval:half], "test": order[half:]}
    empty = [k for k, v in cuts.items() if len(v) == 0]
    if empty:
        raise SchemaError(
            f"{name}: the periods (train window {train_window or 'all'}, eval period "
            f"{eval_period or 'newest 20% of rows'}) leave split(s) {empty} empty; rows per split: "
            f"{ {k: len(v) for k, v in cuts.items()} } over times {int(t_min)}..{int(t_max)}"
        )
    return cuts


def split_table(
    table: pd.DataFrame,
    schema: FeatureSchema,
    *,
    kind: SplitKind = "random",
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    train_window: str | None = None,
    eval_period: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Split rows into train/valid/test: a seeded random permutation, or by time (oldest rows train).

    With ``eval_period`` and/or ``train_window`` (time split only; see :func:`_period_order`) the splits are
    periods of time instead of ``fractions``: rows older than the training window are left out.
    """
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    check_periods(schema, kind, train_window, eval_period)  # first: its message names the period option
    check_split(schema, kind)
    n = len(table)
    if train_window or eval_period:
        cuts = _period_order(table[schema.time].to_numpy(), train_window, eval_period, schema.name)
        return {k: table.iloc[v].reset_index(drop=True) for k, v in cuts.items()}
    if kind == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif kind == "time":
        order = np.argsort(table[schema.time].to_numpy(), kind="stable")
    else:
        raise ValueError(f"unknown split kind {kind!r}; expected 'random' or 'time'")
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    cuts = {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }
    return {
        k: table.iloc[np.sort(v) if kind == "random" else v].reset_index(drop=True) for k, v in cuts.items()
    }


class LookupEncoder:
    """Encodes validated raw columns to model arrays with lookup tables built once (the serving fast path).

    :meth:`FeatureSpec.encode_frame` builds a ``pd.Index`` per vocabulary on every call, which dominates a
    1-row request; here each vocabulary is a ``dict`` (raw value → index ``1..V``, unseen → 0 = OOV) built at
    load time, and the dense scaling constants are arrays. The result equals ``encode_frame`` on the same rows
    (tested). Inputs must already be type-checked (``mdctr.serving.request`` does that): int columns hold
    Python or numpy ints, string columns ``str``, dense columns finite numbers.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        tables: dict[str, dict[Any, int]],
        mean: np.ndarray,
        std: np.ndarray,
    ):
        self.spec = spec
        self.tables = tables
        self.mean = mean
        self.std = std

    @classmethod
    def from_spec(cls, spec: FeatureSpec) -> LookupEncoder:
        tables: dict[str, dict[Any, int]] = {}
        for col in spec.schema.sparse:
            cast = int if spec.kinds[col] == "int" else str
            tables[col] = {cast(v): i + 1 for i, v in enumerate(spec.vocab[col])}
        mean = np.array([spec.mean[c] for c in spec.schema.dense], dtype=np.float64)
        std = np.array([spec.std[c] for c in spec.schema.dense], dtype=np.float64)
        return cls(spec, tables, mean, std)

    def unseen(self, col: str, values: Sequence[Any]) -> list[Any]:
        """The values of sparse column ``col`` that are not in its vocabulary (in order, with repeats)."""
        table = self.tables[col]
        return [v for v in values if v not in table]

    def sparse(self, columns: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        """[n, S] int64 vocabulary indices in schema order (0 = OOV)."""
        out = np.empty((n, len(self.spec.schema.sparse)), dtype=np.int64)
        for j, col in enumerate(self.spec.schema.sparse):
            get = self.tables[col].get
            # numpy ints hash like Python ints, so a numpy column looks up the same keys
            out[:, j] = [get(v, OOV_INDEX) for v in columns[col]]
        return out

    def standardise(self, dense: np.ndarray) -> np.ndarray:
        """[n, D] raw float64 dense values → [n, D] float32 standardised (NaN → 0, the train mean)."""
        z = (dense - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)
