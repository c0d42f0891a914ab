"""``monitor``: compare a window of served requests with the serving version's training data.

One pass over the window's record batches (:class:`~mdctr.monitoring.window.WindowStats`), then drift
(:mod:`mdctr.monitoring.drift`), label metrics when labels are given, the Great Expectations checkpoint on a
sample, the breaches of the thresholds, and the report (HTML + JSON).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.config import ConfigError
from mdctr.monitoring import DEFAULT_MAX_DOMAIN_PSI, DEFAULT_MAX_OOV_SHARE, DEFAULT_MAX_PSI
from mdctr.monitoring.drift import DomainShares, FeatureDrift, all_drift
from mdctr.monitoring.labels import GroupMetrics, label_metrics, read_labels
from mdctr.monitoring.logsource import Window, iter_window
from mdctr.monitoring.reference import Reference, load_reference, mined_counts_from_codes
from mdctr.monitoring.window import BUCKET_MS, WindowStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds and sizes of a monitoring run.

    Attributes:
        max_psi: largest per-feature PSI (sparse and dense).
        feature_max_psi: per-feature overrides of ``max_psi``, ``((column, limit), …)``: e.g. a user id whose
            population turns over from period to period (``inf``: reported, never a breach).
        max_oov_share: largest excess of a sparse feature's OOV share over the valid split's (a fraction).
        feature_max_oov_share: per-feature overrides of ``max_oov_share``, ``((column, limit), …)``.
        max_domain_psi: largest PSI of the hand-crafted or the mined domain shares.
        top_k: categories per sparse feature kept as bins (by reference frequency; the rest is "other").
        bins: reference-quantile bins per dense feature.
        sample_size: reservoir size per dense feature (KS); reference and window alike.
        gx_rows: rows of the uniform sample the Great Expectations checkpoint runs on (0: no checkpoint).
        bucket: time bucket of the label metrics, ``day`` or ``hour``.
        seed: seed of the samples.
    """

    max_psi: float = DEFAULT_MAX_PSI
    feature_max_psi: tuple[tuple[str, float], ...] = ()
    max_oov_share: float = DEFAULT_MAX_OOV_SHARE
    feature_max_oov_share: tuple[tuple[str, float], ...] = ()
    max_domain_psi: float = DEFAULT_MAX_DOMAIN_PSI
    top_k: int = 20
    bins: int = 10
    sample_size: int = 20_000
    gx_rows: int = 20_000
    bucket: str = "day"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bucket not in BUCKET_MS:
            raise ConfigError(f"bucket must be one of {sorted(BUCKET_MS)}; got {self.bucket!r}")
        for what, pairs in (("max-psi", self.feature_max_psi), ("max-oov-share", self.feature_max_oov_share)):
            for column, limit in pairs:
                if not limit >= 0:  # NaN too
                    raise ConfigError(f"feature {what} for {column!r} must be ≥ 0; got {limit!r}")

    def psi_limit(self, feature: str) -> float:
        """The PSI above which ``feature`` is a breach."""
        return dict(self.feature_max_psi).get(feature, self.max_psi)

    def oov_limit(self, feature: str) -> float:
        """The excess OOV share (over the valid split's) above which ``feature`` is a breach."""
        return dict(self.feature_max_oov_share).get(feature, self.max_oov_share)


@dataclass(frozen=True)
class MonitorResult:
    """What a monitoring run found.

    Attributes:
        rows: window rows; ``files``: none here (see the step); ``seconds``: wall time.
        features: per-feature drift; ``handcrafted`` / ``mined``: domain shares.
        labels: label metrics by group kind (overall, handcrafted, mined, bucket, bucket_domain), or None.
        labelled_rows: window rows that found a label.
        validation: the GX checkpoint's summary (success, failures, report path), or None.
        breaches: one line per crossed threshold (empty: all clear).
        served_from / served_to: first and last ``mdctr_served_at`` in the window (ISO, UTC).
    """

    rows: int
    seconds: float
    features: tuple[FeatureDrift, ...]
    handcrafted: DomainShares
    mined: DomainShares
    labels: dict[str, list[GroupMetrics]] | None
    labelled_rows: int
    validation: dict[str, Any] | None
    breaches: tuple[str, ...]
    served_from: str | None
    served_to: str | None
    config: MonitorConfig
    window: str
    reference: str
    versions: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def metrics(self) -> dict[str, float]:
        """Flat finite metrics (MLflow, KFP): ``window.rows``, ``psi.<feature>``, ``oov.<feature>``,
        ``ks.<feature>``, ``domain_psi.{handcrafted,mined}``, ``share.<kind>.<name>``, ``label.<group>.<metric>``."""
        out: dict[str, float] = {"window.rows": self.rows, "breaches": len(self.breaches)}
        for f in self.features:
            out[f"psi.{f.feature}"] = f.psi
            if f.oov_share is not None:
                out[f"oov.{f.feature}"] = f.oov_share
            if f.ks is not None:
                out[f"ks.{f.feature}"] = f.ks
        for d in (self.handcrafted, self.mined):
            out[f"domain_psi.{d.kind}"] = d.psi
            for name, share in zip(d.names, d.window, strict=True):
                out[f"share.{d.kind}.{name}"] = share
        for kind, groups in (self.labels or {}).items():
            if kind == "bucket_domain":
                continue
            for g in groups:
                for m in ("auc", "logloss", "calibration"):
                    out[f"label.{kind}.{g.group}.{m}"] = getattr(g, m)
        if self.validation is not None:
            out["gx.failed"] = self.validation["n_failed"]
        return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and math.isfinite(float(v))}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def breaches(features: Any, domains: list[DomainShares], validation: Any, config: MonitorConfig) -> list[str]:
    """One line per crossed threshold."""
    out = []
    for f in features:
        limit = config.psi_limit(f.feature)
        if math.isfinite(f.psi) and f.psi > limit:
            out.append(f"feature {f.feature!r}: PSI {f.psi:.3f} > max-psi {limit:g}")
        if f.oov_share is not None and math.isfinite(f.oov_share):
            excess = f.oov_share - (f.baseline_oov_share or 0.0)
            oov_limit = config.oov_limit(f.feature)
            if excess > oov_limit:
                out.append(
                    f"feature {f.feature!r}: OOV share {f.oov_share:.1%} is {excess:.1%} above the valid split's "
                    f"{f.baseline_oov_share:.1%} > max-oov-share {oov_limit:.1%}"
                )
    for d in domains:
        if math.isfinite(d.psi) and d.psi > config.max_domain_psi:
            moved = int(
                np.nanargmax(
                    np.abs(np.log(np.maximum(d.window, 1e-4)) - np.log(np.maximum(d.reference, 1e-4)))
                )
            )
            out.append(
                f"{d.kind} domain shares: PSI {d.psi:.3f} > max-domain-psi {config.max_domain_psi:g} (largest move: "
                f"{d.names[moved]!r} {d.reference[moved]:.1%} → {d.window[moved]:.1%})"
            )
    if validation is not None and not validation.success:
        for line in validation.failures:
            out.append(f"Great Expectations on the window: {line}")
    return out


def build_reference(
    prepared_dir: Path | str,
    config: MonitorConfig,
    *,
    reference_codes: Path | str | None = None,
    baseline_log: Window | None = None,
) -> Reference:
    """The training data's profile, with mined-domain shares from the mine_domains step's train codes
    (``reference_codes``) or, failing that, from a baseline window of the log (``baseline_log``)."""
    ref = load_reference(
        prepared_dir, sample_size=max(config.sample_size, 200_000), bins=config.bins, seed=config.seed
    )
    if reference_codes:
        return ref.with_mined(mined_counts_from_codes(reference_codes), f"train codes {reference_codes}")
    if baseline_log is not None:
        base = WindowStats(ref, sample_size=1, gx_rows=0, seed=config.seed)
        for batch in iter_window(baseline_log, base.columns):
            base.add(batch)
        return ref.with_mined(base.mined_counts, f"baseline log {baseline_log.describe()}")
    return ref


def monitor(
    window: Window,
    ref: Reference,
    config: MonitorConfig,
    *,
    labels_path: Path | str | None = None,
    validation_dir: Path | str | None = None,
) -> MonitorResult:
    """Stream ``window`` once against ``ref``; return drift, label metrics, GX outcome and breaches."""
    start = time.perf_counter()
    sch = ref.spec.schema
    labels = read_labels(labels_path, sch.label) if labels_path else None
    stats = WindowStats(
        ref,
        sample_size=config.sample_size,
        gx_rows=config.gx_rows,
        labels=labels,
        bucket=config.bucket,
        seed=config.seed,
    )
    for batch in iter_window(window, stats.columns):
        stats.add(batch)
    if stats.rows == 0:
        from mdctr.schema import SchemaError

        raise SchemaError(f"{window.describe()}: the window holds no logged rows")
    drift = all_drift(ref, stats, config.top_k)
    rows = stats.labelled_rows()
    metrics = label_metrics(rows, sch.domain_names, config.bucket) if rows is not None else None
    validation = None
    gx = None
    sample = stats.gx_sample.sample()
    if validation_dir is not None and sample is not None and config.gx_rows > 0:
        from mdctr.monitoring.checks import check_window

        gx = check_window(sample, ref.spec, Path(validation_dir), source=window.describe())
        validation = {
            "success": gx.success,
            "n_failed": gx.n_failed,
            "rows": gx.rows,
            "failures": list(gx.failures),
            "html": str(gx.html_path),
        }
    found = breaches(drift["features"], [drift["handcrafted"], drift["mined"]], gx, config)
    for line in found:
        log.warning("breach: %s", line)
    iso = _iso
    return MonitorResult(
        rows=stats.rows,
        seconds=time.perf_counter() - start,
        features=tuple(drift["features"]),
        handcrafted=drift["handcrafted"],
        mined=drift["mined"],
        labels=metrics,
        labelled_rows=0 if rows is None else len(rows.label),
        validation=validation,
        breaches=tuple(found),
        served_from=iso(stats.served_min),
        served_to=iso(stats.served_max),
        config=config,
        window=window.describe(),
        reference=ref.meta.get("prepared_dir", ""),
    )


def _iso(ms: int | None) -> str | None:
    from datetime import UTC, datetime

    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
