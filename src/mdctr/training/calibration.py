"""Per-domain temperature scaling, fitted on the validation split after training.

A model ranked by AUC can still be badly scaled: its logloss may be worse than predicting the base rate
(issue #23). Temperature scaling divides each logit by one positive scalar ``T`` per hand-crafted domain,
chosen to minimise that domain's validation logloss. ``T`` is monotonic, so AUC *within* a domain is
unchanged; the pooled AUC may move slightly because domains are rescaled differently.

A domain with fewer than ``min_rows`` validation rows, or with one class only, uses the global temperature
(fitted on every validation row), as does a served row whose request left out the domain column.

The fitted state is plain JSON (:meth:`Calibration.to_dict`); the bundle keeps it as ``calibration.json`` and
:mod:`mdctr.serving.bundle_schema` checks it when a bundle is loaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1
#: a domain needs at least this many validation rows (and both classes) for a temperature of its own
DEFAULT_MIN_ROWS = 200
#: the search range of log T: T in [e^-5, e^5] ≈ [0.0067, 148]
_LOG_T_BOUNDS = (-5.0, 5.0)


def bce_of_logits(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log) of ``logits`` [N] against 0/1 ``labels`` [N], computed stably
    as ``log(1 + e^z) − y·z`` (no probability ever rounds to 0 or 1)."""
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits)) if len(labels) else math.nan


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature ``T > 0`` minimising the mean BCE of ``logits / T`` against ``labels`` (both [N])."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    # the BCE is convex in 1/T, so a bounded 1-D search on log T finds the minimum
    res = minimize_scalar(
        lambda log_t: bce_of_logits(y, z / math.exp(log_t)), bounds=_LOG_T_BOUNDS, method="bounded"
    )
    return float(math.exp(res.x))


@dataclass(frozen=True)
class Calibration:
    """Fitted temperature scaling.

    Attributes:
        domain_names: the hand-crafted domain names, index = domain id.
        global_temperature: T for rows of a domain without its own (and rows with an unknown domain, id −1).
        temperatures: domain name → T, only for domains fitted on their own rows.
        min_rows: the row threshold used when fitting.
        method: ``"temperature"``.
        fitted: validation facts (rows, logloss before and after), for the record only.
    """

    domain_names: tuple[str, ...]
    global_temperature: float
    temperatures: Mapping[str, float] = field(default_factory=dict)
    min_rows: int = DEFAULT_MIN_ROWS
    method: str = "temperature"
    fitted: Mapping[str, Any] = field(default_factory=dict)

    def per_domain(self) -> np.ndarray:
        """T per domain id: float64 [num_domains + 1]; the last entry (index −1) is the global T."""
        t = [self.temperatures.get(name, self.global_temperature) for name in self.domain_names]
        return np.asarray([*t, self.global_temperature], dtype=np.float64)

    def apply_logits(self, logits: np.ndarray, domains: np.ndarray) -> np.ndarray:
        """Calibrated logits [N]: ``logits[i] / T[domains[i]]``; a domain id outside the known ids (the
        serving parser's −1 for a request without the domain column) takes the global T."""
        d = np.asarray(domains, dtype=np.int64).reshape(-1)
        d = np.where((d >= 0) & (d < len(self.domain_names)), d, -1)
        return np.asarray(logits, dtype=np.float64) / self.per_domain()[d]

    def apply_probs(self, logits: np.ndarray, domains: np.ndarray) -> np.ndarray:
        """Calibrated click probabilities [N] float64 from raw ``logits`` [N]."""
        z = self.apply_logits(logits, domains)
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow for large |z|

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``calibration.json`` in a bundle)."""
        return {
            "version": CALIBRATION_VERSION,
            "method": self.method,
            "global_temperature": float(self.global_temperature),
            "temperatures": {k: float(v) for k, v in self.temperatures.items()},
            "min_rows": int(self.min_rows),
            "fitted": dict(self.fitted),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], domain_names: Sequence[str]) -> Calibration:
        """Rebuild from :meth:`to_dict`'s form (checked first by :mod:`mdctr.serving.bundle_schema`)."""
        return cls(
            domain_names=tuple(str(n) for n in domain_names),
            global_temperature=float(d["global_temperature"]),
            temperatures={str(k): float(v) for k, v in dict(d.get("temperatures", {})).items()},
            min_rows=int(d.get("min_rows", DEFAULT_MIN_ROWS)),
            method=str(d.get("method", "temperature")),
            fitted=dict(d.get("fitted", {})),
        )


def fit_calibration(
    labels: np.ndarray,
    logits: np.ndarray,
    domains: np.ndarray,
    domain_names: Sequence[str],
    *,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> Calibration:
    """Fit temperature scaling on validation rows.

    Args:
        labels: [N] 0/1 validation labels.
        logits: [N] the trained model's validation logits.
        domains: [N] hand-crafted domain ids in ``range(len(domain_names))``.
        domain_names: name per domain id.
        min_rows: a domain with fewer rows, or with one class, keeps the global temperature.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    d = np.asarray(domains, dtype=np.int64).reshape(-1)
    if not (y.shape == z.shape == d.shape) or y.size == 0:
        raise ValueError(
            f"calibration: labels {y.shape}, logits {z.shape}, domains {d.shape}: need equal, >0"
        )
    global_t = fit_temperature(y, z)
    temperatures: dict[str, float] = {}
    for k, name in enumerate(domain_names):
        mask = d == k
        if int(mask.sum()) < min_rows or np.unique(y[mask]).size < 2:
            continue  # too little evidence for a temperature of its own: the global one applies
        temperatures[str(name)] = fit_temperature(y[mask], z[mask])
    cal = Calibration(
        domain_names=tuple(str(n) for n in domain_names),
        global_temperature=global_t,
        temperatures=temperatures,
        min_rows=min_rows,
    )
    before, after = bce_of_logits(y, z), bce_of_logits(y, cal.apply_logits(z, d))
    cal = Calibration(
        cal.domain_names,
        global_t,
        temperatures,
        min_rows,
        fitted={"rows": int(y.size), "valid_logloss_before": before, "valid_logloss_after": after},
    )
    log.info(
        "temperature calibration: global T %.4g, %d of %d domains own T; valid logloss %.5f -> %.5f",
        global_t,
        len(temperatures),
        len(domain_names),
        before,
        after,
    )
    return cal
