"""Step: monitor a window of served requests against the serving version's training data.

Writes the HTML report and JSON summary (and the Great Expectations reports) into ``out_dir``, logs a
monitoring run to MLflow when a tracking URI is set (or ``track``), and returns the breaches; the caller decides
what a breach does (the CLI exits 1, the KFP component raises so the pipeline run fails).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mdctr.monitoring.run import MonitorResult

log = logging.getLogger(__name__)

VALIDATION_DIR = "validation"


@dataclass(frozen=True)
class MonitorStepConfig:
    """Attributes: window bounds ``since``/``until`` (ISO, UTC; "" = open); ``labels`` (a labels file, "" =
    none); ``reference_codes`` (a mine_domains output or its codes.npz, "" = none); ``baseline_log`` (a log
    whose shares of mined codes are the reference, "" = none); thresholds ``max_psi`` (per-feature overrides
    ``feature_max_psi``, ``((column, limit), …)``), ``max_oov_share`` (overrides ``feature_max_oov_share``),
    ``max_domain_psi``; ``bucket`` (day/hour); ``top_k``; ``gx_rows`` (0: no GX checkpoint); ``tracking_uri``
    ("" = $MLFLOW_TRACKING_URI or none) and ``track`` (log a run even without a URI, to ./mlruns)."""

    since: str = ""
    until: str = ""
    labels: str = ""
    reference_codes: str = ""
    baseline_log: str = ""
    max_psi: float = 0.25
    feature_max_psi: tuple[tuple[str, float], ...] = ()
    max_oov_share: float = 0.10
    feature_max_oov_share: tuple[tuple[str, float], ...] = ()
    max_domain_psi: float = 0.10
    bucket: str = "day"
    top_k: int = 20
    gx_rows: int = 20_000
    tracking_uri: str = ""
    track: bool = False


@dataclass(frozen=True)
class MonitorOutput:
    """Attributes: ``report`` (HTML) and ``summary`` (JSON) paths, ``rows`` monitored, ``breaches`` (one line
    each), ``metrics`` (flat), ``run_id`` of the MLflow monitoring run ("" when not tracked)."""

    report: Path
    summary: Path
    rows: int
    breaches: tuple[str, ...]
    metrics: dict[str, float]
    run_id: str = ""


def monitor(
    *, log_uri: str, reference_dir: Path | str, out_dir: Path | str, config: MonitorStepConfig
) -> MonitorOutput:
    """Monitor the window of ``log_uri`` against the prepared data in ``reference_dir``; write the report."""
    import os

    from mdctr.monitoring.logsource import Window, parse_time
    from mdctr.monitoring.report import write_report
    from mdctr.monitoring.run import MonitorConfig, build_reference
    from mdctr.monitoring.run import monitor as run_monitor

    cfg = MonitorConfig(
        max_psi=config.max_psi,
        feature_max_psi=tuple(config.feature_max_psi),
        max_oov_share=config.max_oov_share,
        feature_max_oov_share=tuple(config.feature_max_oov_share),
        max_domain_psi=config.max_domain_psi,
        top_k=config.top_k,
        gx_rows=config.gx_rows,
        bucket=config.bucket,
    )
    window = Window(
        log_uri, parse_time(config.since, what="--since"), parse_time(config.until, what="--until")
    )
    baseline = Window(config.baseline_log) if config.baseline_log else None
    ref = build_reference(
        reference_dir, cfg, reference_codes=config.reference_codes or None, baseline_log=baseline
    )
    _check_feature_limits(cfg, ref)
    out = Path(out_dir)
    result = run_monitor(
        window,
        ref,
        cfg,
        labels_path=config.labels or None,
        validation_dir=out / VALIDATION_DIR if cfg.gx_rows > 0 else None,
    )
    report, summary = write_report(result, out)
    metrics = result.metrics()
    run_id = ""
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri or config.track:
        run_id = _track(uri or None, result, out, metrics, reference_dir, log_uri)
    log.info("monitored %d rows: %d breach(es); report %s", result.rows, len(result.breaches), report)
    return MonitorOutput(report, summary, result.rows, result.breaches, metrics, run_id)


def parse_feature_limits(text: str, *, what: str) -> tuple[tuple[str, float], ...]:
    """Per-feature limits from a JSON object string (a pipeline parameter), e.g. ``'{"user_id": "inf", "zip":
    0.5}'`` → ``(("user_id", inf), ("zip", 0.5))``; ``""`` or ``"{}"`` → ``()``. A limit is a number ≥ 0 or a
    string that reads as one (JSON has no infinity: ``"inf"``); anything else is a ``ConfigError`` naming
    ``what`` and the column. Whether the columns exist is checked against the reference when the step runs."""
    import math

    from mdctr.config import ConfigError
    from mdctr.steps.common import parse_options

    out = []
    for column, value in parse_options(text, what=what).items():
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            limit = float(value)
        except ValueError:
            limit = math.nan
        if math.isnan(limit) or limit < 0:
            raise ConfigError(
                f'{what}: column {column!r}: expected a limit ≥ 0 (a number or "inf"), found {value!r}'
            )
        out.append((column, limit))
    return tuple(out)


def _check_feature_limits(cfg: Any, ref: Any) -> None:
    """A per-feature limit must name a feature the reference has (a typo would silently keep the default)."""
    from mdctr.config import ConfigError

    schema = ref.spec.schema
    known = {*schema.sparse, *schema.dense}
    for flag, pairs in (
        ("--feature-max-psi", cfg.feature_max_psi),
        ("--feature-max-oov-share", cfg.feature_max_oov_share),
    ):
        unknown = sorted({c for c, _ in pairs} - known)
        if unknown:
            raise ConfigError(f"{flag} names {unknown}, not features of {schema.name!r}: {sorted(known)}")


def _track(
    uri: str | None,
    result: MonitorResult,
    out: Path,
    metrics: dict[str, float],
    reference_dir: Path | str,
    log_uri: str,
) -> str:
    from datetime import datetime

    from mdctr.tracking.monitoring import log_monitoring_run

    end = result.served_to
    end_ms = int(datetime.fromisoformat(end).timestamp() * 1000) if end else None
    run_id, _ = log_monitoring_run(
        uri,
        run_name=f"monitor {end[:16] if end else ''}".strip(),
        metrics=metrics,
        params={"log": log_uri, "reference": str(reference_dir), "window": result.window},
        files=out,
        step=0 if end_ms is None else end_ms // 1000,
        timestamp_ms=end_ms,
        failed=bool(result.breaches),
    )
    return run_id
