"""Strict request parsing: a request body (or a DataFrame offline) → validated columns, with no pandas work on
the online path and no silent coercion.

Every format ends in the same :class:`Columns` (raw values per serving column, checked for type and range), so
offline scoring, MLflow's pyfunc and the lean server run one code path. Rules, per column kind:

* integer ids (sparse columns fitted on integers) and the hand-crafted domain id: JSON integers only; ``"5"``,
  ``1.9`` and ``true`` are rejected with the column named (never truncated); the domain must be in
  ``0..num_domains-1``;
* the hand-crafted domain column is required only when the model routes by it (``domain_required``); a model
  routed by mined domains, by ``none`` or by a control source takes it optionally: not sent, its rows carry
  :data:`UNKNOWN_DOMAIN`; sent, it is checked exactly as when required;
* the domain column of data that had a raw domain value (a table's ``country`` = ``"us"``): that raw value as
  the training data held it (a string or an integer), mapped to its id by the vocabulary kept in the bundle
  (:attr:`mdctr.data.encode.FeatureSpec.domain_values`); a value outside it is rejected naming column and value;
* string categories: JSON strings only;
* dense numbers: JSON numbers (not booleans). ``null`` (NaN in a DataFrame) means *missing* and becomes the
  train mean, as in training; ``±Infinity``/``NaN`` literals are not JSON and are rejected; a value more than
  :data:`DEFAULT_MAX_ABS_Z` training standard deviations from the training mean is rejected as out of range.

Errors are :class:`RequestError` (a :class:`SchemaError`) carrying an HTTP status and a message that quotes at
most a short excerpt of the offending value.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mdctr.data.encode import domain_key
from mdctr.schema import SchemaError

#: dense values further than this many training standard deviations from the training mean are rejected
DEFAULT_MAX_ABS_Z = 1000.0
#: rows one request may carry
DEFAULT_MAX_ROWS = 10_000
#: characters of an offending value quoted in an error message
EXCERPT_CHARS = 40
#: characters of a whole error message
MESSAGE_CHARS = 600
#: the hand-crafted domain id of a row whose request left out the (optional) domain column; never routes
UNKNOWN_DOMAIN = -1

KIND_INT = "int"
KIND_STR = "str"
KIND_DENSE = "dense"
KIND_DOMAIN = "domain"

#: Open Inference Protocol (v2) datatypes accepted per column kind
V2_DATATYPES = {
    KIND_INT: {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
    KIND_DOMAIN: {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
    KIND_STR: {"BYTES"},
    KIND_DENSE: {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"},
}
#: the datatype the model metadata advertises per column kind
V2_ADVERTISED = {KIND_INT: "INT64", KIND_DOMAIN: "INT64", KIND_STR: "BYTES", KIND_DENSE: "FP64"}


class RequestError(SchemaError):
    """A request the server must refuse; ``status`` is its HTTP status (400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400):
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.status = status


# reprlib bounds the work too: a 4 MB list is summarised, never rendered whole and then cut
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = EXCERPT_CHARS


def excerpt(value: Any) -> str:
    """A repr of ``value`` of at most :data:`EXCERPT_CHARS` characters (errors never echo a whole body)."""
    r = _REPR.repr(value.item() if isinstance(value, np.generic) else value)
    return r if len(r) <= EXCERPT_CHARS else r[: EXCERPT_CHARS - 1] + "…"


@dataclass(frozen=True)
class Columns:
    """Validated request columns.

    Attributes:
        sparse: per sparse column, its raw values (Python ints or strings, or a numpy int/object array) [N].
        dense: [N, D] float64 raw dense values (NaN = missing).
        domain: [N] int64 hand-crafted domain ids; :data:`UNKNOWN_DOMAIN` for every row when the request left
            out the domain column (allowed only where the model does not route by it).
    """

    sparse: dict[str, Sequence[Any]]
    dense: np.ndarray
    domain: np.ndarray

    def __len__(self) -> int:
        return int(self.domain.shape[0])


class RequestParser:
    """Turns request bodies (parsed JSON) or DataFrames into :class:`Columns` for one bundle's schema."""

    def __init__(
        self,
        *,
        kinds: Mapping[str, str],
        num_domains: int,
        mean: np.ndarray,
        std: np.ndarray,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        max_abs_z: float = DEFAULT_MAX_ABS_Z,
        domain_values: Sequence[Any] | None = None,
        domain_required: bool = True,
    ):
        """``domain_values``: the raw domain values in id order; given, the domain column takes those values
        (not ids). ``domain_required``: False when the model does not route by the hand-crafted domain (the
        column may then be left out)."""
        self.kinds = dict(kinds)  # serving column → KIND_*, in serving order
        self.columns = tuple(self.kinds)
        self.sparse = tuple(c for c, k in self.kinds.items() if k in (KIND_INT, KIND_STR))
        self.dense = tuple(c for c, k in self.kinds.items() if k == KIND_DENSE)
        (self.domain,) = (c for c, k in self.kinds.items() if k == KIND_DOMAIN)
        self.domain_required = domain_required
        #: the columns every request must carry (all of ``columns`` but an optional domain column)
        self.required = tuple(c for c in self.columns if domain_required or c != self.domain)
        self.num_domains = num_domains
        self.domain_values = None if domain_values is None else list(domain_values)
        self._domain_ids: dict[str, int] | None = None
        if self.domain_values is not None:
            if len(self.domain_values) != num_domains:
                raise ValueError(
                    f"{len(self.domain_values)} domain values for {num_domains} domains: {self.domain_values}"
                )
            self._domain_ids = {domain_key(v): i for i, v in enumerate(self.domain_values)}
        self.max_rows = max_rows
        # raw-value bounds equivalent to |z| <= max_abs_z
        self.low = np.asarray(mean, dtype=np.float64) - max_abs_z * np.asarray(std, dtype=np.float64)
        self.high = np.asarray(mean, dtype=np.float64) + max_abs_z * np.asarray(std, dtype=np.float64)
        self.max_abs_z = max_abs_z

    def datatypes(self, col: str) -> set[str]:
        """The v2 datatypes input ``col`` accepts."""
        kind = self.kinds[col]
        if kind == KIND_DOMAIN and self.domain_values is not None:
            return V2_DATATYPES[KIND_DOMAIN] | V2_DATATYPES[KIND_STR]
        return V2_DATATYPES[kind]

    def advertised(self, col: str) -> str:
        """The v2 datatype the model metadata gives for input ``col``."""
        kind = self.kinds[col]
        if kind == KIND_DOMAIN and self.domain_values is not None:
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in self.domain_values)
            return V2_ADVERTISED[KIND_DOMAIN if ints else KIND_STR]
        return V2_ADVERTISED[kind]

    def optional(self, col: str) -> bool:
        """Input ``col`` may be left out of a request."""
        return col not in self.required

    def input_metadata(self) -> list[dict[str, Any]]:
        """The inputs as v2 model metadata describes them; an optional one says so (``"optional": true``, the
        field Triton's model configuration uses)."""
        return [
            {"name": c, "datatype": self.advertised(c), "shape": [-1]}
            | ({"optional": True} if self.optional(c) else {})
            for c in self.columns
        ]

    def _domain_ids_of(self, dom: Sequence[Any], n: int) -> np.ndarray:
        """The domain column → int64 ids [n]: integer ids, or raw values through the bundle's vocabulary."""
        col = self.domain
        if self._domain_ids is None:
            if not all(type(v) is int for v in dom):
                bad = next(v for v in dom if type(v) is not int)
                raise RequestError(
                    f"request: column {col!r} expects integer domain ids; found {excerpt(bad)}"
                )
            bad_dom = [v for v in dom if not 0 <= v < self.num_domains]
            if bad_dom:
                raise RequestError(
                    f"request: column {col!r} must be one of 0..{self.num_domains - 1}; found "
                    f"{len(bad_dom)} row(s) outside, e.g. {excerpt(bad_dom[0])}"
                )
            return np.fromiter(dom, dtype=np.int64, count=n)
        ids = np.empty(n, dtype=np.int64)
        for i, v in enumerate(dom):
            # the value as the training data held it: a string or an integer (never a bool, float or null)
            found = self._domain_ids.get(domain_key(v)) if type(v) in (str, int) else None
            if v is None:
                raise RequestError(
                    f"request: column {col!r} has a missing domain value (row {i}); expected one of "
                    f"{excerpt(self.domain_values)}"
                )
            if found is None:
                raise RequestError(
                    f"request: column {col!r} has an unknown domain value {excerpt(v)} (row {i}); "
                    f"the model knows {excerpt(self.domain_values)}"
                )
            ids[i] = found
        return ids

    # -- shared checks -------------------------------------------------------------------------------------
    def _rows(self, n: int) -> None:
        if n == 0:
            raise RequestError("request: no rows")
        if self.max_rows is not None and n > self.max_rows:
            raise RequestError(f"request: {n} rows exceed the limit of {self.max_rows} per request", 413)

    def _missing(self, present: Sequence[str]) -> None:
        missing = [c for c in self.required if c not in present]
        if missing:
            optional = [c for c in self.columns if self.optional(c)]
            raise RequestError(
                f"request: missing column(s) {missing}; expected {list(self.required)}"
                + (f" (optional: {optional})" if optional else "")
            )

    def check_lists(self, values: Mapping[str, Sequence[Any]], n: int) -> Columns:
        """Validate plain Python value lists (from JSON), one per serving column, each of length ``n``."""
        sparse: dict[str, Sequence[Any]] = {}
        for col in self.sparse:
            vals = values[col]
            want = int if self.kinds[col] == KIND_INT else str
            # `type(v) is int` rejects bools (a subclass of int) and floats such as 1.9 or 5.0
            if not all(type(v) is want for v in vals):
                bad = next(v for v in vals if type(v) is not want)
                noun = "integer ids" if want is int else "strings"
                raise RequestError(f"request: column {col!r} expects {noun}; found {excerpt(bad)}")
            sparse[col] = vals
        if self.domain in values:
            domain = self._domain_ids_of(values[self.domain], n)
        else:  # an optional domain column left out (_missing refused it where required)
            domain = np.full(n, UNKNOWN_DOMAIN, dtype=np.int64)
        dense = np.empty((n, len(self.dense)), dtype=np.float64)
        for j, col in enumerate(self.dense):
            vals = values[col]
            if not all(type(v) is float or type(v) is int or v is None for v in vals):
                bad = next(v for v in vals if not (type(v) is float or type(v) is int or v is None))
                raise RequestError(f"request: column {col!r} expects numbers; found {excerpt(bad)}")
            try:
                dense[:, j] = [math.nan if v is None else v for v in vals]
            except OverflowError:  # an integer beyond float64
                raise RequestError(f"request: column {col!r} holds a number out of range") from None
        self._check_dense(dense)
        return Columns(sparse=sparse, dense=dense, domain=domain)

    def _check_dense(self, dense: np.ndarray) -> None:
        """Reject ±inf and values beyond ``max_abs_z`` training standard deviations (NaN = missing passes)."""
        with np.errstate(invalid="ignore"):
            bad = (dense < self.low) | (dense > self.high) | np.isinf(dense)
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise RequestError(
                f"request: column {self.dense[j]!r} has {int(bad[:, j].sum())} value(s) out of range, e.g. "
                f"{excerpt(float(dense[i, j]))}; accepted: finite values within {self.max_abs_z:g} training "
                f"standard deviations of the training mean ([{self.low[j]:.6g}, {self.high[j]:.6g}])"
            )

    # -- formats -------------------------------------------------------------------------------------------
    def from_frame(self, df: pd.DataFrame) -> Columns:
        """Offline scoring: a DataFrame with the serving columns (extra columns are ignored)."""
        if not isinstance(df, pd.DataFrame):
            raise RequestError(
                f"request: expected a table of columns {list(self.columns)}, got {type(df).__name__}"
            )
        self._missing(list(df.columns))
        n = len(df)
        self._rows(n)
        values: dict[str, Sequence[Any]] = {}
        for col in self.columns:
            if col not in df.columns:  # an optional column left out
                continue
            s = df[col]
            kind = self.kinds[col]
            if kind == KIND_DOMAIN and self.domain_values is not None:
                # raw values, looked up one by one (numpy ints become Python ints, NaN a missing value)
                values[col] = [
                    v.item() if isinstance(v, np.integer) else None if _is_nan(v) else v for v in s.tolist()
                ]
            elif kind in (KIND_INT, KIND_DOMAIN):
                if pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s):
                    values[col] = s.to_numpy(dtype=np.int64).tolist()
                elif s.dtype == object:
                    values[col] = s.tolist()  # checked value by value below
                else:
                    raise RequestError(
                        f"request: column {col!r} expects integer ids; found dtype {s.dtype}, "
                        f"e.g. {excerpt(s.iloc[0])}"
                    )
            elif kind == KIND_STR:
                values[col] = s.tolist()
            else:
                if pd.api.types.is_bool_dtype(s) or not (
                    pd.api.types.is_numeric_dtype(s) or s.dtype == object
                ):
                    raise RequestError(f"request: column {col!r} expects numbers; found dtype {s.dtype}")
                vals = s.tolist()
                # a float column's missing values are NaN; the JSON form of missing is None
                values[col] = [None if isinstance(v, float) and math.isnan(v) else v for v in vals]
        return self.check_lists(values, n)

    def from_split(self, body: Any) -> Columns:
        """MLflow's ``dataframe_split`` payload: ``{"columns": [...], "data": [[row], ...]}``."""
        if not isinstance(body, dict):
            raise RequestError(f"dataframe_split: expected an object, got {_json_type(body)}")
        unknown = sorted(set(body) - {"columns", "data", "index"})
        if unknown:
            raise RequestError(f"dataframe_split: unknown key(s) {excerpt(unknown)}; expected columns, data")
        columns, data = body.get("columns"), body.get("data")
        if not isinstance(columns, list) or not all(type(c) is str for c in columns):
            raise RequestError("dataframe_split: 'columns' must be a list of column names")
        if len(set(columns)) != len(columns):
            raise RequestError("dataframe_split: 'columns' has duplicate names")
        if not isinstance(data, list):
            raise RequestError(f"dataframe_split: 'data' must be a list of rows, got {_json_type(data)}")
        self._missing(columns)
        n = len(data)
        self._rows(n)
        k = len(columns)
        if not all(type(r) is list and len(r) == k for r in data):
            i = next(i for i, r in enumerate(data) if not (type(r) is list and len(r) == k))
            raise RequestError(
                f"dataframe_split: row {i} must be a list of {k} values (one per column); got {excerpt(data[i])}"
            )
        by_name = dict(zip(columns, zip(*data, strict=True), strict=True))
        return self.check_lists({c: by_name[c] for c in self.columns if c in by_name}, n)

    def from_records(self, body: Any) -> Columns:
        """MLflow's ``dataframe_records`` payload: ``[{"col": value, ...}, ...]``."""
        if not isinstance(body, list):
            raise RequestError(f"dataframe_records: expected a list of row objects, got {_json_type(body)}")
        n = len(body)
        self._rows(n)
        if not all(type(r) is dict for r in body):
            i = next(i for i, r in enumerate(body) if type(r) is not dict)
            raise RequestError(f"dataframe_records: row {i} must be an object; got {excerpt(body[i])}")
        # an optional column is sent for every row or for none: the first row decides
        present = [c for c in self.columns if c in self.required or c in body[0]]
        for i, r in enumerate(body):
            missing = [c for c in present if c not in r]
            if missing:
                raise RequestError(f"dataframe_records: row {i} lacks column(s) {missing}")
        return self.check_lists({c: [r[c] for r in body] for c in present}, n)

    def from_v2(self, body: Any) -> Columns:
        """An Open Inference Protocol v2 request: one input tensor per serving column, shape [N] or [N, 1]."""
        if not isinstance(body, dict):
            raise RequestError(f"v2 request: expected an object, got {_json_type(body)}")
        unknown = sorted(set(body) - {"id", "parameters", "inputs", "outputs"})
        if unknown:
            raise RequestError(f"v2 request: unknown key(s) {excerpt(unknown)}")
        if "id" in body and type(body["id"]) is not str:
            raise RequestError("v2 request: 'id' must be a string")
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise RequestError("v2 request: 'inputs' must be a non-empty list of tensors")
        values: dict[str, Sequence[Any]] = {}
        n: int | None = None
        for t in inputs:
            if not isinstance(t, dict):
                raise RequestError(f"v2 request: each input must be an object; got {excerpt(t)}")
            name = t.get("name")
            if type(name) is not str:
                raise RequestError("v2 request: every input needs a string 'name'")
            if name not in self.kinds:
                raise RequestError(
                    f"v2 request: unknown input {excerpt(name)}; expected {list(self.columns)}"
                )
            if name in values:
                raise RequestError(f"v2 request: input {name!r} given twice")
            datatype = t.get("datatype")
            accepted = self.datatypes(name)
            if datatype not in accepted:
                raise RequestError(
                    f"v2 request: input {name!r} has datatype {excerpt(datatype)}; expected one of "
                    f"{sorted(accepted)}"
                )
            shape, data = t.get("shape"), t.get("data")
            if (
                not isinstance(shape, list)
                or not 1 <= len(shape) <= 2
                or not all(type(d) is int and d >= 0 for d in shape)
                or (len(shape) == 2 and shape[1] != 1)
            ):
                raise RequestError(
                    f"v2 request: input {name!r} shape must be [N] or [N, 1]; got {excerpt(shape)}"
                )
            if not isinstance(data, list):
                raise RequestError(f"v2 request: input {name!r} 'data' must be a flat list")
            if len(data) != shape[0]:
                raise RequestError(
                    f"v2 request: input {name!r} has {len(data)} value(s) but shape {shape} says {shape[0]}"
                )
            if n is None:
                n = shape[0]
                self._rows(n)
            elif shape[0] != n:
                raise RequestError(f"v2 request: input {name!r} has {shape[0]} rows; other inputs have {n}")
            _check_v2_datatype(name, datatype, data)
            values[name] = data
        self._missing(list(values))
        assert n is not None
        return self.check_lists(values, n)


#: the values each v2 integer datatype holds (Open Inference Protocol: INTn / UINTn, two's complement)
V2_INT_RANGES = {
    **{f"INT{b}": (-(1 << (b - 1)), (1 << (b - 1)) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, (1 << b) - 1) for b in (8, 16, 32, 64)},
}
#: the largest finite magnitude of each v2 float datatype (IEEE 754 half, single, double)
V2_FLOAT_MAX = {
    "FP16": 65504.0,
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}


def _check_v2_datatype(name: str, datatype: str, data: list[Any]) -> None:
    """Refuse v2 tensor data its declared ``datatype`` cannot hold (``INT8`` with 1193, ``INT64`` with 1.5,
    ``BYTES`` with a number). ``null`` passes here: it means a missing dense value, and the column checks that
    follow refuse it where a value is required, with their own message."""
    bad: Any = None
    if datatype in V2_INT_RANGES:
        lo, hi = V2_INT_RANGES[datatype]
        ints = [v for v in data if v is not None]
        if not all(type(v) is int for v in ints):
            bad = next(v for v in ints if type(v) is not int)
        elif ints and (min(ints) < lo or max(ints) > hi):
            bad = next(v for v in ints if not lo <= v <= hi)
        holds = f"integers {lo}..{hi}"
    elif datatype in V2_FLOAT_MAX:
        top = V2_FLOAT_MAX[datatype]
        nums = [v for v in data if v is not None]
        if not all(type(v) is float or type(v) is int for v in nums):
            bad = next(v for v in nums if not (type(v) is float or type(v) is int))
        else:  # an int beyond float64 compares exactly (no OverflowError)
            bad = next((v for v in nums if abs(v) > top), None)
        holds = f"numbers of magnitude ≤ {top:.6g}"
    elif datatype == "BYTES":
        if not all(type(v) is str or v is None for v in data):
            bad = next(v for v in data if not (type(v) is str or v is None))
        holds = "strings"
    else:
        return
    if bad is not None:
        raise RequestError(
            f"v2 request: input {name!r} is declared {datatype}, which holds {holds}; found {excerpt(bad)}"
        )


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )
