"""Labels that arrive after serving, joined to the log by ``mdctr_request_id``; metrics per domain and bucket."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mdctr.monitoring.logsource import REQUEST_ID
from mdctr.monitoring.window import LabelledRows
from mdctr.schema import SchemaError, describe_rows


def read_labels(path: Path | str, label: str) -> pd.Series:
    """A labels file (parquet, or CSV with a header) → label (int8, 0/1) indexed by request id.

    Refuses, with one line naming the file, column and rows: a missing column, a label outside 0/1, and a
    request id given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={REQUEST_ID: str})
    missing = [c for c in (REQUEST_ID, label) if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{path}: missing column(s) {missing}; expected {[REQUEST_ID, label]}, found {list(df.columns)}"
        )
    values = pd.to_numeric(df[label], errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.any():
        raise SchemaError(
            f"{path}: column {label!r} must be 0/1; found {int(bad.sum())} row(s) with other values at "
            f"{describe_rows(bad.to_numpy())}, e.g. {df[label][bad].iloc[0]!r}"
        )
    ids = df[REQUEST_ID].astype(str)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        raise SchemaError(
            f"{path}: column {REQUEST_ID!r} repeats {int(dup.sum())} request id(s) at {describe_rows(dup)}, "
            f"e.g. {ids[dup].iloc[0]!r}; expected one label per logged row"
        )
    return pd.Series(
        values.to_numpy(dtype=np.int8), index=pd.Index(ids.to_numpy(), name=REQUEST_ID), name=label
    )


@dataclass(frozen=True)
class GroupMetrics:
    """Metrics of one group of labelled rows: ``group`` (its name), ``rows``, ``positives``, ``auc`` (NaN when
    one class is missing), ``logloss``, ``mean_prediction``, ``mean_label`` and ``calibration`` (mean
    prediction / mean label; NaN without positives)."""

    group: str
    rows: int
    positives: int
    auc: float
    logloss: float
    mean_prediction: float
    mean_label: float
    calibration: float


def group_metrics(name: str, pred: np.ndarray, label: np.ndarray) -> GroupMetrics:
    from sklearn.metrics import log_loss, roc_auc_score

    n = len(label)
    pos = int(label.sum())
    auc = float(roc_auc_score(label, pred)) if 0 < pos < n else math.nan
    p = np.clip(pred, 1e-7, 1 - 1e-7)
    ll = float(log_loss(label, p, labels=[0, 1])) if n else math.nan
    mean_p = float(pred.mean()) if n else math.nan
    mean_y = float(label.mean()) if n else math.nan
    return GroupMetrics(name, n, pos, auc, ll, mean_p, mean_y, mean_p / mean_y if mean_y > 0 else math.nan)


def bucket_name(start_ms: int, bucket: str) -> str:
    t = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    return t.strftime("%Y-%m-%d") if bucket == "day" else t.strftime("%Y-%m-%dT%H:00")


def label_metrics(
    rows: LabelledRows, domain_names: tuple[str, ...], bucket: str
) -> dict[str, list[GroupMetrics]]:
    """Metrics overall, per hand-crafted domain, per mined code, per time bucket and per (bucket, domain)."""
    out: dict[str, list[GroupMetrics]] = {"overall": [group_metrics("all", rows.prediction, rows.label)]}

    def by(key: np.ndarray, name: callable) -> list[GroupMetrics]:  # type: ignore[valid-type]
        return [
            group_metrics(name(int(k)), rows.prediction[key == k], rows.label[key == k])
            for k in np.unique(key)
            if k >= 0
        ]

    out["handcrafted"] = by(rows.domain, lambda k: domain_names[k] if k < len(domain_names) else str(k))
    out["mined"] = by(rows.mined, lambda k: f"code {k}")
    out["bucket"] = by(rows.bucket, lambda k: bucket_name(k, bucket))
    out["bucket_domain"] = [
        group_metrics(
            f"{bucket_name(int(b), bucket)}|{domain_names[int(d)] if d < len(domain_names) else d}",
            rows.prediction[(rows.bucket == b) & (rows.domain == d)],
            rows.label[(rows.bucket == b) & (rows.domain == d)],
        )
        for b in np.unique(rows.bucket)
        for d in np.unique(rows.domain[rows.bucket == b])
        if d >= 0
    ]
    return out
