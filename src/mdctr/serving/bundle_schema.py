"""One schema for the files of a model bundle, checked every time a bundle is written or loaded.

A bundle is data from a store: a hand-edited, truncated or mismatched one must be refused when it is loaded,
not answer ``ready`` and then fail (or silently mis-score) every request. The JSON files are described by
pydantic v2 models (types, ranges, finite numbers, known format versions); the facts that span files are
checked after them:

* ``bundle.json``: ``closed_columns`` is a list of the spec's sparse columns; the model is registered;
  ``inputs.vocab_sizes`` / ``inputs.num_dense`` equal the spec's vocabularies (+1: the OOV row 0, see
  :class:`mdctr.data.encode.FeatureSpec`) and dense columns; a model routed by ``handcrafted`` domains has
  one routing domain per hand-crafted domain;
* ``feature_spec.json``: per sparse column a vocabulary of distinct values of its kind; per dense column a
  finite mean and a standard deviation > 0;
* ``model.pt``: the embedding table has one row per vocabulary entry (+ OOV) of every sparse column, and every
  tensor is finite (checked by :func:`check_weights` on the loaded state dict);
* ``routing.json`` (control sources only) and ``miner/`` (external miner only): present exactly when the
  domain source needs them, fitted for the same features and number of domains;
* ``metrics.json``: finite numbers (``null`` where a metric is undefined), per-domain entries naming a domain;
* ``calibration.json`` (optional, ``mdctr train --calibrate temperature``): finite temperatures > 0, keyed by
  hand-crafted domain names of the spec (:mod:`mdctr.training.calibration`).

Every refusal is a :class:`BundleError`: one line naming the file and the field, never a pydantic wall.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from mdctr.config import ConfigError
from mdctr.data.encode import OOV_INDEX, SPEC_VERSION
from mdctr.models import DOMAIN_SOURCES, model_class
from mdctr.routing.sources import CONTROL_SOURCES, check_routed_config
from mdctr.schema import FeatureSchema, SchemaError
from mdctr.serving.request import excerpt

BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
SPEC_FILE = "feature_spec.json"
WEIGHTS_FILE = "model.pt"
MINER_DIR = "miner"
#: the fitted control source (random/binned) of a bundle routed by one (mdctr.routing.ControlState)
ROUTING_FILE = "routing.json"
METRICS_FILE = "metrics.json"
#: optional per-domain temperature scaling fitted on validation (mdctr.training.calibration)
CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 1
#: the files of the miner directory (mdctr.domains.miner; named here so that checking needs no miner code)
MINER_INPUTS_FILE = "model_inputs.json"
#: the state-dict key of every CTRModel's shared embedding table (mdctr.blocks.FeatureEmbedding)
EMBEDDING_KEY = "embedding.table.weight"


class BundleError(SchemaError):
    """A bundle that must not be served; the one-line message names the file and the field."""


# -- the JSON files as pydantic models -------------------------------------------------------------------------
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=0)]
PositiveCount = Annotated[StrictInt, Field(ge=1)]


def _finite_json(value: Any, path: str = "") -> Any:
    """Free-form JSON (a model config, spec metadata): every number in it must be finite.

    pydantic checks the typed fields; this covers values whose shape the bundle does not fix.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'} is {value!r}; expected a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _finite_json(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_json(v, f"{path}[{i}]")
    return value


class _Strict(BaseModel):
    # strict: no coercion ("3" is not 3, a string is not a list); no unknown keys (a misspelt field fails)
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, protected_namespaces=())


class InputsModel(_Strict):
    """``bundle.json`` ``inputs`` (and a miner's ``model_inputs.json``): :class:`mdctr.models.ModelInputs`."""

    vocab_sizes: list[PositiveCount]
    num_dense: Count
    num_domains: PositiveCount
    embed_dim: PositiveCount


class BundleInfoModel(_Strict):
    """``bundle.json``: see :class:`mdctr.serving.bundle.BundleInfo`."""

    version: Literal[BUNDLE_VERSION]  # type: ignore[valid-type]
    model_name: StrictStr
    # "model_config" is pydantic's own attribute: the field is read under its JSON name by alias
    config: dict[str, Any] = Field(alias="model_config")
    width: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)]  # 1 and 1.0 both
    inputs: InputsModel
    domain_source: Literal[DOMAIN_SOURCES]  # type: ignore[valid-type]
    closed_columns: list[StrictStr]

    @field_validator("config")
    @classmethod
    def _config_finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_json(v)

    @field_validator("model_name")
    @classmethod
    def _registered(cls, v: str) -> str:
        try:
            model_class(v)
        except KeyError as e:
            raise ValueError(e.args[0] if e.args else str(e)) from None
        return v


class SchemaModel(BaseModel):
    """The roles of ``feature_spec.json`` ``schema`` that serving relies on; the rest is checked by
    :meth:`mdctr.schema.FeatureSchema.from_dict`."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    name: StrictStr
    sparse: list[StrictStr]
    dense: list[StrictStr]
    label: StrictStr
    domain: StrictStr
    domain_names: Annotated[list[StrictStr], Field(min_length=1)]


class SpecModel(_Strict):
    """``feature_spec.json``: see :class:`mdctr.data.encode.FeatureSpec`."""

    version: Literal[SPEC_VERSION]  # type: ignore[valid-type]
    schema_: SchemaModel = Field(alias="schema")
    vocab: dict[str, list[Any]]
    kinds: dict[str, Literal["int", "str"]]
    mean: dict[str, Finite]
    std: dict[str, Positive]
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("meta")
    @classmethod
    def _meta_finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_json(v)


class ControlModel(_Strict):
    """``routing.json``: a fitted control source, :class:`mdctr.routing.sources.ControlState`."""

    source: Literal[CONTROL_SOURCES]  # type: ignore[valid-type]
    column: StrictStr
    num_domains: PositiveCount
    edges: list[Finite] = Field(default_factory=list)
    counts: list[Count] = Field(default_factory=list)


class DomainMetricsModel(BaseModel):
    """One ``metrics.json`` ``per_domain`` entry: the hand-crafted ``domain`` id and its metrics."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    domain: Count


class MetricsModel(_Strict):
    """``metrics.json``: ``{"overall": {name: number | null}, "per_domain": [{"domain": id, ...}, ...]}``."""

    overall: dict[str, Finite | None]
    per_domain: list[DomainMetricsModel]

    @field_validator("per_domain")
    @classmethod
    def _entries_finite(cls, v: list[DomainMetricsModel]) -> list[DomainMetricsModel]:
        for i, entry in enumerate(v):
            _finite_json(entry.model_extra or {}, f"[{i}]")
        return v


class CalibrationModel(_Strict):
    """``calibration.json``: :meth:`mdctr.training.calibration.Calibration.to_dict`."""

    version: Literal[CALIBRATION_VERSION]  # type: ignore[valid-type]
    method: Literal["temperature"]
    global_temperature: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)]
    temperatures: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False, strict=False)]]
    min_rows: Count
    fitted: dict[str, Any] = Field(default_factory=dict)

    @field_validator("fitted")
    @classmethod
    def _fitted_finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_json(v)


# -- one bundle, read and checked -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckedBundle:
    """A bundle's JSON files, each checked against its model and against the others.

    Attributes:
        info, spec, metrics: the raw dicts of ``bundle.json``, ``feature_spec.json`` and ``metrics.json``
            (metrics None when the file is absent: serving does not need it).
        routing: the raw dict of ``routing.json``, or None (sources other than random/binned).
        has_miner: the bundle carries an external domain miner (``miner/``).
        calibration: the raw dict of ``calibration.json``, or None (an uncalibrated model).
    """

    info: dict[str, Any]
    spec: dict[str, Any]
    routing: dict[str, Any] | None
    metrics: dict[str, Any] | None
    has_miner: bool
    calibration: dict[str, Any] | None = None


def check_bundle(directory: Path | str) -> CheckedBundle:
    """Read and check every JSON file of the bundle in ``directory`` (not the weights: :func:`check_weights`).

    Raises :class:`BundleError` (one line: file, field, what was expected and found) for the first problem.
    """
    d = Path(directory)
    raw_info = read_json(d / BUNDLE_FILE)
    _check_version(BUNDLE_FILE, raw_info, BUNDLE_VERSION, "bundle format")
    info = _validate(BundleInfoModel, raw_info, BUNDLE_FILE)
    raw_spec = read_json(d / SPEC_FILE)
    _check_version(SPEC_FILE, raw_spec, SPEC_VERSION, "feature spec format")
    spec = _validate(SpecModel, raw_spec, SPEC_FILE)
    schema = _feature_schema(spec)
    _check_spec(spec, schema)
    _check_info(info, schema, spec)
    routing = _check_routing(d, info, schema)
    has_miner = _check_miner(d, info, spec)
    metrics = None
    if (d / METRICS_FILE).is_file():
        raw_metrics = read_json(d / METRICS_FILE)
        metrics_model = _validate(MetricsModel, raw_metrics, METRICS_FILE)
        for i, entry in enumerate(metrics_model.per_domain):
            if entry.domain >= schema.num_domains:
                raise BundleError(
                    f"{METRICS_FILE}: per_domain[{i}].domain: {entry.domain} is not a hand-crafted domain id "
                    f"(0..{schema.num_domains - 1})"
                )
        metrics = raw_metrics
    calibration = _check_calibration(d, schema)
    return CheckedBundle(raw_info, raw_spec, routing, metrics, has_miner, calibration)


def check_weights(
    state: Mapping[str, torch.Tensor], inputs: Mapping[str, Any], where: str, *, finite: bool = True
) -> None:
    """The model's state dict ``state`` fits the bundle: its embedding table has ``sum(vocab_sizes)`` rows of
    ``embed_dim`` (every vocabulary entry and each column's OOV row) and, with ``finite``, every floating
    tensor is finite.

    ``inputs``: the checked ``bundle.json`` ``inputs``; ``where``: the weights file, for the message.
    """
    table = state.get(EMBEDDING_KEY)
    rows = max(1, sum(inputs["vocab_sizes"]))  # FeatureEmbedding keeps one row when there is no sparse column
    expected = (rows, inputs["embed_dim"])
    if table is None or tuple(table.shape) != expected:
        found = "no such tensor" if table is None else f"shape {list(table.shape)}"
        raise BundleError(
            f"{where}: {EMBEDDING_KEY}: expected shape {list(expected)} (the sum of {BUNDLE_FILE} "
            f"inputs.vocab_sizes {inputs['vocab_sizes']} by inputs.embed_dim), found {found}"
        )
    for key, tensor in state.items() if finite else ():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            bad = int((~torch.isfinite(tensor)).sum())
            raise BundleError(f"{where}: {key}: {bad} non-finite value(s); a model's weights must be finite")


def read_json(path: Path) -> Any:
    """A bundle file's JSON (NaN/Infinity literals are read, then refused by the schema with the field named)."""
    if not path.is_file():
        raise BundleError(f"{path.name}: missing from the bundle at {path.parent}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path.name}: not valid JSON ({e})") from None


# -- helpers ------------------------------------------------------------------------------------------------------
def _check_version(file: str, raw: Any, known: int, what: str) -> None:
    # the version first and alone: the other fields of an unknown format may legitimately differ
    if not isinstance(raw, dict):
        raise BundleError(f"{file}: expected a JSON object, found {excerpt(raw)}")
    version = raw.get("version")
    if type(version) is not int or version != known:
        raise BundleError(
            f"{file}: version: {excerpt(version)} is not a known {what} version (this mdctr reads {known})"
        )


def _validate(model: type[BaseModel], raw: Any, file: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise BundleError(_one_line(file, e)) from None


def _one_line(file: str, error: ValidationError) -> str:
    """The first of pydantic's errors as ``file: field: message (found value)``, counting the others."""
    errors = error.errors(include_url=False)
    first = errors[0]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    msg = first["msg"].removeprefix("Value error, ")
    found = first.get("input")
    text = f"{file}: {field or '(top level)'}: {msg}"
    if first["type"] not in ("missing", "value_error") and not isinstance(found, dict):
        text += f"; found {excerpt(found)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem(s))"
    return text


def _feature_schema(spec: SpecModel) -> FeatureSchema:
    try:
        return FeatureSchema.from_dict(dict(spec.schema_.model_dump()))
    except (SchemaError, TypeError, ValueError, AttributeError) as e:
        raise BundleError(f"{SPEC_FILE}: schema: {e}") from None


def _same_keys(file: str, field: str, found: Mapping[str, Any], expected: tuple[str, ...], role: str) -> None:
    if set(found) != set(expected):
        raise BundleError(
            f"{file}: {field}: has entries for {sorted(found)}; expected one per {role} column {list(expected)}"
        )


def _check_spec(spec: SpecModel, schema: FeatureSchema) -> None:
    for field, entries, cols, role in (
        ("vocab", spec.vocab, schema.sparse, "sparse"),
        ("kinds", spec.kinds, schema.sparse, "sparse"),
        ("mean", spec.mean, schema.dense, "dense"),
        ("std", spec.std, schema.dense, "dense"),
    ):
        _same_keys(SPEC_FILE, field, entries, cols, role)
    for col in schema.sparse:
        want = int if spec.kinds[col] == "int" else str
        values = spec.vocab[col]
        if not all(type(v) is want for v in values):  # a bool is not an int id, a float is neither
            i, v = next((i, v) for i, v in enumerate(values) if type(v) is not want)
            raise BundleError(
                f"{SPEC_FILE}: vocab.{col}[{i}]: expected {'an integer' if want is int else 'a string'} "
                f"(kinds.{col} is {spec.kinds[col]!r}); found {excerpt(v)}"
            )
        if len(set(values)) != len(values):
            seen: set[Any] = set()
            dup = next(v for v in values if v in seen or seen.add(v))  # type: ignore[func-returns-value]
            raise BundleError(f"{SPEC_FILE}: vocab.{col}: value {excerpt(dup)} appears twice")
    domain_values = spec.meta.get("domain_values")
    if domain_values is not None and (
        not isinstance(domain_values, list) or len(domain_values) != schema.num_domains
    ):
        raise BundleError(
            f"{SPEC_FILE}: meta.domain_values: expected a list of {schema.num_domains} raw domain values (one per "
            f"schema.domain_names entry); found {excerpt(domain_values)}"
        )


def _check_info(info: BundleInfoModel, schema: FeatureSchema, spec: SpecModel) -> None:
    try:  # the model's own strict config: an unknown or mistyped key fails here, not at the first request
        check_routed_config(info.model_name, info.domain_source, info.config)
    except (ConfigError, TypeError, ValueError) as e:
        raise BundleError(f"{BUNDLE_FILE}: model_config: {e}") from None
    unknown = [c for c in info.closed_columns if c not in schema.sparse]
    if unknown:
        raise BundleError(
            f"{BUNDLE_FILE}: closed_columns: {excerpt(unknown[0])} is not a sparse column of {SPEC_FILE} "
            f"(sparse columns: {list(schema.sparse)})"
        )
    inputs = info.inputs
    if len(inputs.vocab_sizes) != len(schema.sparse):
        raise BundleError(
            f"{BUNDLE_FILE}: inputs.vocab_sizes: {len(inputs.vocab_sizes)} embedding tables for the "
            f"{len(schema.sparse)} sparse columns {list(schema.sparse)} of {SPEC_FILE}"
        )
    for i, col in enumerate(schema.sparse):
        # index 0 is the OOV row (mdctr.data.encode.OOV_INDEX), so a vocabulary of V values needs V + 1 rows
        needed = len(spec.vocab[col]) + 1
        if inputs.vocab_sizes[i] != needed:
            raise BundleError(
                f"{SPEC_FILE}: vocab.{col}: {needed - 1} values need {needed} embedding rows (row {OOV_INDEX} "
                f"is out-of-vocabulary), but the model's table for it has {inputs.vocab_sizes[i]} "
                f"({BUNDLE_FILE} inputs.vocab_sizes[{i}])"
            )
    if inputs.num_dense != len(schema.dense):
        raise BundleError(
            f"{BUNDLE_FILE}: inputs.num_dense: {inputs.num_dense}, but {SPEC_FILE} has "
            f"{len(schema.dense)} dense column(s) {list(schema.dense)}"
        )
    if info.domain_source == "handcrafted" and inputs.num_domains != schema.num_domains:
        raise BundleError(
            f"{BUNDLE_FILE}: inputs.num_domains: {inputs.num_domains}, but domain source 'handcrafted' routes "
            f"by the {schema.num_domains} hand-crafted domains of {SPEC_FILE}"
        )


def _check_routing(d: Path, info: BundleInfoModel, schema: FeatureSchema) -> dict[str, Any] | None:
    present = (d / ROUTING_FILE).is_file()
    control = info.domain_source in CONTROL_SOURCES
    if present != control:
        raise BundleError(
            f"{ROUTING_FILE}: {'present' if present else 'missing'}, but {BUNDLE_FILE} domain_source is "
            f"{info.domain_source!r} (only the control sources {list(CONTROL_SOURCES)} keep one)"
        )
    if not present:
        return None
    raw = read_json(d / ROUTING_FILE)
    state = _validate(ControlModel, raw, ROUTING_FILE)
    if state.source != info.domain_source:
        raise BundleError(
            f"{ROUTING_FILE}: source: {state.source!r}, but {BUNDLE_FILE} domain_source is {info.domain_source!r}"
        )
    if state.num_domains != info.inputs.num_domains:
        raise BundleError(
            f"{ROUTING_FILE}: num_domains: {state.num_domains}, but the model was built for "
            f"{info.inputs.num_domains} ({BUNDLE_FILE} inputs.num_domains)"
        )
    columns = schema.sparse if state.source == "random" else schema.sparse + schema.dense
    if state.column not in columns:
        raise BundleError(
            f"{ROUTING_FILE}: column: {excerpt(state.column)} is not a feature it can route by "
            f"({list(columns)})"
        )
    if state.source == "binned":
        if len(state.edges) != state.num_domains - 1 or list(state.edges) != sorted(set(state.edges)):
            raise BundleError(
                f"{ROUTING_FILE}: edges: expected {state.num_domains - 1} increasing bin edges for "
                f"{state.num_domains} domains; found {excerpt(state.edges)}"
            )
        if bool(state.counts) != (state.column in schema.sparse):
            raise BundleError(
                f"{ROUTING_FILE}: counts: binning the {'sparse' if state.column in schema.sparse else 'dense'} "
                f"column {state.column!r} {'needs' if state.column in schema.sparse else 'takes no'} "
                "per-id train counts"
            )
    elif state.edges or state.counts:
        raise BundleError(f"{ROUTING_FILE}: edges/counts: the 'random' source keeps none")
    return raw


def _check_calibration(d: Path, schema: FeatureSchema) -> dict[str, Any] | None:
    if not (d / CALIBRATION_FILE).is_file():
        return None
    raw = read_json(d / CALIBRATION_FILE)
    _check_version(CALIBRATION_FILE, raw, CALIBRATION_VERSION, "calibration format")
    cal = _validate(CalibrationModel, raw, CALIBRATION_FILE)
    unknown = [k for k in cal.temperatures if k not in schema.domain_names]
    if unknown:
        raise BundleError(
            f"{CALIBRATION_FILE}: temperatures: {excerpt(unknown[0])} is not a hand-crafted domain of "
            f"{SPEC_FILE} (domains: {list(schema.domain_names)})"
        )
    return raw


def _check_miner(d: Path, info: BundleInfoModel, spec: SpecModel) -> bool:
    present = (d / MINER_DIR).is_dir()
    needed = info.domain_source == "mined" and not model_class(info.model_name).mines_domains
    if present != needed:
        raise BundleError(
            f"{MINER_DIR}/: {'present' if present else 'missing'}, but {BUNDLE_FILE} routes model "
            f"{info.model_name!r} by {info.domain_source!r} domains, which "
            f"{'needs' if needed else 'takes no'} external domain miner"
        )
    if not present:
        return False
    file = f"{MINER_DIR}/{MINER_INPUTS_FILE}"
    miner = _validate(InputsModel, read_json(d / MINER_DIR / MINER_INPUTS_FILE), file)
    if miner.vocab_sizes != info.inputs.vocab_sizes or miner.num_dense != info.inputs.num_dense:
        raise BundleError(
            f"{file}: vocab_sizes/num_dense: {miner.vocab_sizes}/{miner.num_dense}, but the model's are "
            f"{info.inputs.vocab_sizes}/{info.inputs.num_dense} ({BUNDLE_FILE} inputs): the miner was fitted "
            "on other features"
        )
    return True
