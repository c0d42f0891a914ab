"""The model bundle: one directory holding everything serving needs, and the :class:`Predictor` over it.

Layout (written atomically with :func:`mdctr.io.atomic_dir`)::

    bundle.json          format version, model name/config/width, ModelInputs, domain source, unseen policy
    feature_spec.json    the fitted FeatureSpec (vocabularies, scalers, schema)
    model.pt             the model's state_dict (loaded with ``weights_only=True``)
    miner/               the pre-trained DomainMiner (only when the domain source is ``mined``)
    metrics.json         test metrics: {"overall": {...}, "per_domain": [{"domain": id, ...}, ...]}
    calibration.json     per-domain temperatures fitted on validation (only with ``--calibrate temperature``):
                         every pCTR served is sigmoid(logit / T[hand-crafted domain]); see
                         :mod:`mdctr.training.calibration`

A request carries the RAW columns ``schema.serving_columns`` (features + hand-crafted domain id; no label).
The hand-crafted domain id is required only by a model routed by it (:data:`ROUTES_BY_HANDCRAFTED`); a model
routed by mined domains, by ``none`` or by a control source accepts it (checked when sent) but does not need it.
Unseen sparse values are handled per column, and the choice is written into ``bundle.json``:

* ``closed`` columns (by default: vocabulary of at most ``closed_vocab_max`` values, e.g. gender, occupation)
  reject an unseen value with :class:`SchemaError` (a 4xx when served) — such a value is a client bug;
* every other sparse column (ids: user, item, zip…) maps unseen values to the OOV bucket (index 0), because new
  users and items are normal traffic for a CTR model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mdctr.config import ConfigError
from mdctr.data.encode import FeatureSpec, LookupEncoder
from mdctr.data.tensors import Batch, TensorData
from mdctr.io import atomic_dir, write_json_atomic
from mdctr.models import DOMAIN_SOURCES, CTRModel, ModelInputs
from mdctr.routing.sources import CONTROL_SOURCES, ControlState, build_routed
from mdctr.schema import SchemaError
from mdctr.serving.bundle_schema import (  # the file names and format version live beside the schema
    BUNDLE_FILE,
    BUNDLE_VERSION,
    CALIBRATION_FILE,
    METRICS_FILE,
    MINER_DIR,
    ROUTING_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    BundleError,
    check_bundle,
    check_weights,
)
from mdctr.serving.request import (
    DEFAULT_MAX_ABS_Z,
    KIND_DENSE,
    KIND_DOMAIN,
    KIND_INT,
    KIND_STR,
    Columns,
    RequestError,
    RequestParser,
    excerpt,
)
from mdctr.training.calibration import Calibration

log = logging.getLogger(__name__)

#: the domain sources that route by the request's hand-crafted domain id (mdctr.routing.DomainRouting.domains):
#: only these require the domain column; ``mined`` routes by the features, ``none`` by nothing, ``random`` by
#: the user id, ``binned`` by one feature
ROUTES_BY_HANDCRAFTED = frozenset({"handcrafted"})
#: sparse columns with at most this many training values reject unseen values by default
DEFAULT_CLOSED_VOCAB_MAX = 100
#: rows per forward pass when predicting (bounds memory for large requests)
PREDICT_BATCH = 8192


@dataclass(frozen=True)
class BundleInfo:
    """Contents of ``bundle.json``: how to rebuild and route the model.

    Attributes:
        model_name: registry key of the model (``mdctr.models``).
        model_config: the model's config overrides (strict, as for ``build_model``).
        width: width multiplier fitted to the FLOP budget.
        inputs: the :class:`ModelInputs` the model was built with.
        domain_source: ``handcrafted`` | ``mined`` | ``none``: what fills ``batch.domain``.
        closed_columns: sparse columns whose unseen values are rejected (others map to OOV).
        version: bundle format version.
    """

    model_name: str
    model_config: dict[str, Any]
    width: float
    inputs: ModelInputs
    domain_source: str
    closed_columns: tuple[str, ...]
    version: int = BUNDLE_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["closed_columns"] = list(self.closed_columns)
        d["inputs"]["vocab_sizes"] = list(self.inputs.vocab_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BundleInfo:
        d = dict(d)
        if d.get("version") != BUNDLE_VERSION:
            raise SchemaError(f"bundle format version {d.get('version')!r}; expected {BUNDLE_VERSION}")
        inp = dict(d["inputs"])
        inp["vocab_sizes"] = tuple(inp["vocab_sizes"])
        d["inputs"] = ModelInputs(**inp)
        d["closed_columns"] = tuple(d.get("closed_columns", ()))
        return cls(**d)


def default_closed_columns(
    spec: FeatureSpec, closed_vocab_max: int = DEFAULT_CLOSED_VOCAB_MAX
) -> tuple[str, ...]:
    """Sparse columns with a small (closed) vocabulary: at most ``closed_vocab_max`` training values."""
    return tuple(c for c in spec.schema.sparse if len(spec.vocab[c]) <= closed_vocab_max)


def normalise_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Bring test metrics to the bundle form ``{"overall": {name: float}, "per_domain": [dict, ...]}``.

    Accepts that form, or a flat dict of scalars with an optional ``per_domain`` list (as a trainer returns).
    Every per-domain entry must name its hand-crafted domain id under ``domain``.
    """
    if not metrics:
        return {"overall": {}, "per_domain": []}
    m = dict(metrics)
    per_domain = [dict(d) for d in m.pop("per_domain", [])]
    overall = m.pop("overall", None)
    if overall is None:
        overall = {
            k: float(v) for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
    for entry in per_domain:
        if "domain" not in entry:
            raise ValueError(f"per-domain metrics entry {entry} lacks the 'domain' id")
        entry["domain"] = int(entry["domain"])
    return {"overall": {k: float(v) for k, v in overall.items()}, "per_domain": per_domain}


def save_bundle(
    directory: Path | str,
    *,
    model: CTRModel,
    model_name: str,
    model_config: Mapping[str, Any],
    width: float,
    spec: FeatureSpec,
    domain_source: str,
    miner: Any | None = None,
    metrics: Mapping[str, Any] | None = None,
    closed_columns: Sequence[str] | None = None,
    closed_vocab_max: int = DEFAULT_CLOSED_VOCAB_MAX,
    routing_state: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle atomically to ``directory`` (replacing it) and return its path.

    ``miner`` (a ``mdctr.domains.DomainMiner``) is required when ``domain_source == "mined"`` and the model
    does not mine its own domains (``CTRModel.mines_domains``); it must be None otherwise. ``closed_columns`` overrides which sparse columns reject unseen values (default: those with at
    most ``closed_vocab_max`` training values). ``metrics``: see :func:`normalise_metrics`. ``calibration``: a
    :meth:`mdctr.training.calibration.Calibration.to_dict`, written as ``calibration.json`` and applied by
    :class:`Predictor` to every prediction.
    """
    if domain_source not in DOMAIN_SOURCES:
        raise ValueError(f"unknown domain source {domain_source!r}; expected one of {DOMAIN_SOURCES}")
    if (domain_source in CONTROL_SOURCES) != (routing_state is not None):
        raise ValueError(f"domain source {domain_source!r}: a control source needs its fitted routing_state")
    needs_miner = domain_source == "mined" and not type(model).mines_domains
    if needs_miner != (miner is not None):
        raise ValueError(
            f"{model_name} with domain source {domain_source!r} "
            f"{'needs' if miner is None else 'takes no'} external domain miner"
        )
    closed = (
        tuple(closed_columns)
        if closed_columns is not None
        else default_closed_columns(spec, closed_vocab_max)
    )
    unknown = sorted(set(closed) - set(spec.schema.sparse))
    if unknown:
        raise ValueError(f"closed_columns {unknown} are not sparse columns of {spec.schema.name!r}")
    info = BundleInfo(
        model_name=model_name,
        model_config=dict(model_config),
        width=float(width),
        inputs=model.inputs,
        domain_source=domain_source,
        closed_columns=closed,
    )
    with atomic_dir(directory) as tmp:
        write_json_atomic(tmp / BUNDLE_FILE, info.to_dict())
        spec.save(tmp / SPEC_FILE)
        # cpu tensors so a bundle trained on a GPU loads anywhere
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / WEIGHTS_FILE)
        if miner is not None:
            miner.save(tmp / MINER_DIR)
        if routing_state is not None:  # a control source (random/binned), fitted on train
            write_json_atomic(tmp / ROUTING_FILE, dict(routing_state))
        write_json_atomic(tmp / METRICS_FILE, normalise_metrics(metrics))
        if calibration is not None:
            write_json_atomic(tmp / CALIBRATION_FILE, dict(calibration))
        # the loader's checks, before the bundle replaces the old one: what cannot be loaded is never written.
        # Weights are checked for shape only: a diverged (non-finite) model is refused when loaded for serving
        try:
            checked = check_bundle(tmp)
            check_weights(model.state_dict(), checked.info["inputs"], WEIGHTS_FILE, finite=False)
        except BundleError as e:
            raise BundleError(f"refusing to write the bundle {directory}: {e}") from None
    log.info("saved %s bundle (%s domains) to %s", model_name, domain_source, directory)
    return Path(directory)


def _first_problem(error: Exception) -> str:
    """One line of an error: torch's state-dict errors open with a header line and list every mismatch below
    it; keep the first mismatch."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    return lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]


#: where an MLflow model directory logged by ``mdctr.tracking.register_bundle`` keeps the bundle
MLFLOW_BUNDLE_PATHS = ("data/bundle", "artifacts/bundle")


def bundle_dir_of(directory: Path | str) -> Path:
    """The bundle inside ``directory``: the directory itself, or an MLflow model directory's ``data/bundle``
    (``artifacts/bundle`` in models logged before the loader-module format).

    The path is fixed, never read from ``MLmodel``: a tampered ``MLmodel`` cannot point serving elsewhere.
    """
    directory = Path(directory)
    if (directory / BUNDLE_FILE).is_file():
        return directory
    for sub in MLFLOW_BUNDLE_PATHS:
        if (directory / sub / BUNDLE_FILE).is_file():
            return directory / sub
    raise FileNotFoundError(
        f"{directory} holds no model bundle ({BUNDLE_FILE} in it or in {' or '.join(MLFLOW_BUNDLE_PATHS)})"
    )


def read_metrics(directory: Path | str) -> dict[str, Any]:
    """The bundle's test metrics (``{"overall": ..., "per_domain": [...]}``)."""
    return json.loads((Path(directory) / METRICS_FILE).read_text())


@dataclass(frozen=True)
class Scored:
    """What one scoring pass gives.

    Attributes:
        pctr: float64 [N] in (0, 1).
        domain: int32 [N] the hand-crafted routing domain of each row; None when the model is not routed by it
            (or routes were not asked for).
        mined: int32 [N] the mined code of each row (an external miner's, or the model's own); None when the
            model has none (or routes were not asked for).
    """

    pctr: np.ndarray
    domain: np.ndarray | None = None
    mined: np.ndarray | None = None


class Predictor:
    """Raw rows in, pCTR out, exactly as training encoded and routed them. Load with :meth:`load`.

    The fast path: lookup tables are built once here (:class:`mdctr.data.encode.LookupEncoder`); a request is
    parsed strictly into :class:`mdctr.serving.request.Columns` (no pandas), encoded to numpy arrays and run
    through the model in ``inference_mode``. :meth:`predict` (a DataFrame, offline and in MLflow's pyfunc) and
    :meth:`predict_columns` (the lean server) share everything after parsing.
    """

    def __init__(
        self,
        info: BundleInfo,
        spec: FeatureSpec,
        model: CTRModel,
        miner: Any | None = None,
        *,
        max_rows: int | None = None,
        max_abs_z: float = DEFAULT_MAX_ABS_Z,
    ):
        """``max_rows``: the most rows one call may score; None (offline scoring, the MLflow pyfunc, the
        promotion gate's validation re-score) is unbounded. The production server passes its request limit."""
        self.info = info
        self.spec = spec
        self.model = model.eval()
        self.miner = miner
        self.control: ControlState | None = None  # a control source's fitted state (set by load)
        #: per-domain temperature scaling (set by load from calibration.json); None serves raw sigmoid(logit)
        self.calibration: Calibration | None = None
        schema = spec.schema
        #: the columns a request may carry (all of ``schema.serving_columns``); ``required_columns`` must be sent
        self.columns: tuple[str, ...] = schema.serving_columns
        self.encoder = LookupEncoder.from_spec(spec)
        kinds: dict[str, str] = {}
        for col in self.columns:
            if col in schema.sparse:
                kinds[col] = KIND_INT if spec.kinds[col] == "int" else KIND_STR
            elif col in schema.dense:
                kinds[col] = KIND_DENSE
            else:
                kinds[col] = KIND_DOMAIN
        self.parser = RequestParser(
            kinds=kinds,
            num_domains=schema.num_domains,
            mean=self.encoder.mean,
            std=self.encoder.std,
            max_rows=max_rows,
            max_abs_z=max_abs_z,
            domain_values=spec.domain_values,
            domain_required=info.domain_source in ROUTES_BY_HANDCRAFTED,
        )
        self.required_columns: tuple[str, ...] = self.parser.required

    @classmethod
    def load(cls, directory: Path | str, **limits: Any) -> Predictor:
        """Rebuild the model from a bundle directory (CPU, eval mode); reads JSON and tensors only.

        ``limits``: ``max_rows`` / ``max_abs_z`` of the request parser.
        """
        directory = Path(directory)
        if not (directory / BUNDLE_FILE).is_file():
            raise FileNotFoundError(f"{directory} is not a model bundle: {BUNDLE_FILE} not found")
        # every JSON file against its schema and the others (mdctr.serving.bundle_schema): a bad bundle fails
        # here, in one line, before a server could say ready
        checked = check_bundle(directory)
        info = BundleInfo.from_dict(checked.info)
        spec = FeatureSpec.load(directory / SPEC_FILE)
        model = build_routed(
            info.model_name, info.domain_source, info.inputs, width=info.width, config=info.model_config
        )
        # weights_only: the unpickler accepts tensors and plain containers only, never arbitrary objects
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise BundleError(f"{WEIGHTS_FILE}: expected a state dict, found {type(state).__name__}")
        check_weights(state, checked.info["inputs"], WEIGHTS_FILE)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # torch lists every mismatch over many lines: keep the first
            raise BundleError(
                f"{WEIGHTS_FILE}: does not fit model {info.model_name!r} as {BUNDLE_FILE} describes it: "
                f"{_first_problem(e)}"
            ) from None
        miner = None
        if checked.has_miner:
            from mdctr.domains.miner import DomainMiner  # only mined bundles need the miner code

            try:
                miner = DomainMiner.load(directory / MINER_DIR)
            except (
                ConfigError,
                RuntimeError,
                TypeError,
                ValueError,
            ) as e:  # a config or state that does not fit
                raise BundleError(
                    f"{MINER_DIR}/: the domain miner does not load: {_first_problem(e)}"
                ) from None
        predictor = cls(info, spec, model, miner, **limits)
        if checked.routing is not None:
            predictor.control = ControlState.from_dict(checked.routing)
        if checked.calibration is not None:
            predictor.calibration = Calibration.from_dict(checked.calibration, spec.schema.domain_names)
        return predictor

    # -- the fast path ------------------------------------------------------------------------------------
    def _check_closed(self, cols: Columns) -> None:
        for col in self.info.closed_columns:
            unseen = self.encoder.unseen(col, cols.sparse[col])
            if unseen:
                known = self.spec.vocab[col]
                raise RequestError(
                    f"request: column {col!r} has {len(unseen)} unknown value(s), e.g. {excerpt(unseen[0])}; "
                    f"known values: {excerpt(known[:20])}"
                )

    def encode_columns(self, cols: Columns) -> TensorData:
        """Validated columns → model tensors; ``domain`` holds the routing domain of the bundle's source."""
        self._check_closed(cols)
        n = len(cols)
        hand = torch.from_numpy(cols.domain)
        data = TensorData(
            sparse=torch.from_numpy(self.encoder.sparse(cols.sparse, n)),
            dense=torch.from_numpy(self.encoder.standardise(cols.dense)),
            domain=hand,
            label=torch.zeros(n, dtype=torch.float32),  # TensorData wants a label; serving has none
            handcrafted=hand,
        )
        source = self.info.domain_source
        if source == "none" or (source == "mined" and self.miner is None):
            # a self-mining model (CTRModel.mines_domains) ignores batch.domain
            return data.with_domain(torch.zeros(n, dtype=torch.int64))
        if source == "mined":
            return data.with_domain(self.miner.assign(data))
        if source in CONTROL_SOURCES:
            return data.with_domain(self.control.assign(data, self.spec.schema))  # type: ignore[union-attr]
        return data

    def predict_columns(self, cols: Columns) -> np.ndarray:
        """pCTR per row of validated columns: float64 [N] in (0, 1) (calibrated when the bundle carries a
        calibration: a row without a hand-crafted domain takes the global temperature)."""
        return self.score_columns(cols).pctr

    @torch.inference_mode()
    def score_columns(self, cols: Columns, *, routes: bool = False) -> Scored:
        """:meth:`predict_columns` plus, with ``routes``, each row's routing domains from the same forward pass
        (the served-request log records them; no second forward)."""
        data = self.encode_columns(cols)
        n = len(data)
        out = np.empty(n, dtype=np.float64)
        # a model that mines its own codes (adaptive2, adaptdhm, mined-joint) leaves them in last_codes
        own_codes = routes and type(self.model).mines_domains
        mined = np.empty(n, dtype=np.int32) if own_codes else None
        for start in range(0, n, PREDICT_BATCH):
            batch: Batch = data.batch(start, start + PREDICT_BATCH)
            stop = start + len(batch)
            if self.calibration is None:
                out[start:stop] = torch.sigmoid(self.model(batch)).numpy()
            else:
                out[start:stop] = self.calibration.apply_probs(
                    self.model(batch).double().numpy(), data.handcrafted[start:stop].numpy()
                )
            if mined is not None:
                mined[start:stop] = self.model.last_codes.numpy()  # type: ignore[union-attr]
        if not routes:
            return Scored(out)
        source = self.info.domain_source
        domain = data.domain.numpy().astype(np.int32) if source in ROUTES_BY_HANDCRAFTED else None
        if mined is None and source == "mined" and self.miner is not None:
            mined = data.domain.numpy().astype(np.int32)  # the external miner's codes
        return Scored(out, domain, mined)

    # -- DataFrame entry points (offline scoring, MLflow pyfunc) ------------------------------------------
    def encode(self, df: pd.DataFrame) -> TensorData:
        """Check and encode raw rows (a DataFrame of ``self.columns``, at least ``self.required_columns``; extra
        columns ignored)."""
        return self.encode_columns(self.parser.from_frame(df))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """pCTR per row: ``df`` with the raw ``self.columns`` (at least ``self.required_columns``) → float64
        array [N] in (0, 1)."""
        return self.predict_columns(self.parser.from_frame(df))
