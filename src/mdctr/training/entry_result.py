"""The result of one trained (model, domain source, seed) entry: ``metrics.json`` as a typed record.

The ``train_model`` step writes it (:meth:`EntryResult.write`), and the TrainJob task, ``evaluate`` and the HTML
report read it (:meth:`EntryResult.read`); nothing else parses the file. Beside it in the results directory lie
the test predictions (:data:`PREDICTIONS_FILE`, :func:`write_predictions` / :func:`read_predictions`), which the
paired significance tests need.

The JSON layout is the one the step has always written (keys in the order below, non-finite floats as
``null``), so results written before this module existed read back unchanged. A metric that is undefined (AUC
of a domain with one class) is NaN in memory and ``null`` on disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, TypeAdapter, ValidationError

from mdctr.io import write_json_atomic

#: the entry's record (this module's :class:`EntryResult`) in a ``train_model`` results directory
METRICS_FILE = "metrics.json"
#: test labels, probabilities and hand-crafted domains: what paired significance tests need
PREDICTIONS_FILE = "predictions.npz"
#: the per-domain metrics an entry records, in the order they are written
DOMAIN_METRICS = ("auc", "logloss")


class EntryResultError(ValueError):
    """A results file that is not an entry's record; the message names the file and the field."""


def _nan_for_null(value: Any) -> Any:
    # JSON has no NaN: json_safe writes an undefined metric as null, and it reads back as NaN
    return math.nan if value is None else value


#: a metric: a float, NaN where undefined (``null`` in the file)
Metric = Annotated[float, BeforeValidator(_nan_for_null)]


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class EntryKey:
    """Which entry: registered ``model``, ``domain_source`` (see :mod:`mdctr.routing`) and training ``seed``."""

    model: str
    domain_source: str
    seed: int

    @property
    def name(self) -> str:
        """``model/domain_source``: the leaderboard row the entry belongs to."""
        return f"{self.model}/{self.domain_source}"


@dataclass(frozen=True)
class EntryMetrics:
    """Overall test metrics and costs of an entry (pooled over every test row).

    Attributes:
        auc, logloss: test AUC and logloss; ``flops_per_sample``: forward FLOPs per sample (routed, miner
            included); ``dense_params``: parameters outside the embedding table; ``width``: the fitted width.
        train_samples_per_s, train_wall_s: training throughput (rows/s) and wall time (s); ``epochs_run``.
        best_valid_auc, best_valid_logloss: of the best (uncalibrated) epoch; ``valid_logloss``: of the returned
            model (calibrated when calibration is set).
        base_rate_logloss, train_positive_rate: the train positive rate predicted for every test row, and its
            test logloss (what a useful model must beat).

    Fields after ``width`` are optional (NaN/None) so records of older runs still read.
    """

    auc: Metric
    logloss: Metric
    flops_per_sample: float
    dense_params: int
    width: float
    train_samples_per_s: Metric = math.nan
    best_valid_auc: Metric = math.nan
    valid_logloss: Metric = math.nan
    best_valid_logloss: Metric = math.nan
    base_rate_logloss: Metric = math.nan
    train_positive_rate: Metric = math.nan
    train_wall_s: Metric = math.nan
    epochs_run: int | None = None

    def finite(self) -> dict[str, float | int]:
        """The finite values by name (what MLflow and the bundle record; undefined metrics left out)."""
        return {k: v for k, v in asdict(self).items() if _finite(v)}


@dataclass(frozen=True)
class DomainMetrics:
    """Test metrics of one hand-crafted domain: its id ``domain`` and ``name``, ``rows``, ``positive_rate``,
    ``auc`` and ``logloss`` (NaN where undefined: no rows, or one class)."""

    domain: int
    name: str
    rows: int | None = None
    positive_rate: Metric = math.nan
    auc: Metric = math.nan
    logloss: Metric = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry (``{"domain": id, "name": …, "rows": …, …}``; the bundle and MLflow take this)."""
        return asdict(self)


def per_domain_metrics(
    metrics: Mapping[str, Any], domain_names: tuple[str, ...]
) -> tuple[DomainMetrics, ...]:
    """:func:`mdctr.training.metrics.evaluate_predictions`'s per-domain dict (keyed by name) → one record per
    hand-crafted domain id, in id order."""
    out = []
    for i, name in enumerate(domain_names):
        values = metrics["domains"].get(str(name), {})
        keys = ("rows", "positive_rate", "auc", "logloss")
        out.append(DomainMetrics(domain=i, name=str(name), **{k: values[k] for k in keys if k in values}))
    return tuple(out)


@dataclass(frozen=True)
class EntryResult:
    """One trained entry, as ``metrics.json`` holds it.

    Attributes:
        entry: model, domain source, seed.
        run_id: the entry's nested MLflow run (``""`` when not logged).
        overall: overall test metrics and costs; ``per_domain``: per hand-crafted domain, in id order.
        budget: how the width was fitted (``budget``, ``budget_flops``, ``budget_rel_error``, …).
        history: one dict per training epoch (validation AUC/logloss, train loss, …).
        num_routing_domains: domains the model routed by; ``early_stop_metric``: ``auc`` or ``logloss``.
        warm_started: the warm start's source label (``""``: cold).
        calibration: the per-domain temperature scaling fitted on validation, or None.
        settings: the step's settings (FLOP budget, epochs, options, warm start), which evaluate puts on the
            pipeline's parent run.
    """

    entry: EntryKey
    run_id: str
    overall: EntryMetrics
    per_domain: tuple[DomainMetrics, ...]
    budget: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    num_routing_domains: int | None = None
    early_stop_metric: str = ""
    warm_started: str = ""
    calibration: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def flops(self) -> float:
        """Forward FLOPs per sample."""
        return float(self.overall.flops_per_sample)

    @property
    def width(self) -> float:
        """The width fitted to the FLOP budget."""
        return float(self.overall.width)

    def scalars(self, domain_metrics: tuple[str, ...] = DOMAIN_METRICS) -> dict[str, float]:
        """The finite overall values plus ``domain.<id>.<metric>`` for ``domain_metrics``: what the KFP Metrics
        artifacts show (the train step's all of :data:`DOMAIN_METRICS`, evaluate's winner only ``auc``)."""
        out = {k: float(v) for k, v in self.overall.finite().items()}
        for d in self.per_domain:
            for key in domain_metrics:
                value = getattr(d, key)
                if _finite(value):
                    out[f"domain.{d.domain}.{key}"] = float(value)
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``metrics.json`` (before :func:`mdctr.io.json_safe` turns NaN into null)."""
        return asdict(self)

    def write(self, directory: Path | str) -> Path:
        """Write ``directory/metrics.json`` atomically (2-space indented, NaN → null); returns its path."""
        path = Path(directory) / METRICS_FILE
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, directory: Path | str) -> EntryResult:
        """The record in ``directory/metrics.json``.

        Raises:
            FileNotFoundError: no such file.
            EntryResultError: not JSON, or a field missing or of the wrong type: one line naming the file, the
                field and what was found.
        """
        path = Path(directory) / METRICS_FILE
        text = path.read_text()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise EntryResultError(f"{path}: not JSON ({e})") from None
        try:
            return _ADAPTER.validate_python(raw)
        except ValidationError as e:
            raise EntryResultError(f"{path}: {_first_error(e)}") from None


_ADAPTER = TypeAdapter(EntryResult)


def _first_error(error: ValidationError) -> str:
    """The first of pydantic's errors as ``field: message (found value)``, counting the others."""
    errors = error.errors(include_url=False)
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    found = "" if first["type"] == "missing" else f" (found {first.get('input')!r:.80})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where or 'top level'}: {first['msg']}{found}{more}"


def write_predictions(directory: Path | str, *, labels: Any, probs: Any, domains: Any) -> Path:
    """Write the test ``labels``, ``probs`` and hand-crafted ``domains`` ([N_test] each) as
    ``directory/predictions.npz``; returns its path."""
    path = Path(directory) / PREDICTIONS_FILE
    np.savez(path, labels=labels, probs=probs, domains=domains)
    return path


def read_predictions(directory: Path | str) -> Mapping[str, np.ndarray]:
    """``{"labels", "probs", "domains"}`` ([N_test] arrays) from ``directory/predictions.npz`` (no pickles)."""
    with np.load(Path(directory) / PREDICTIONS_FILE, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
