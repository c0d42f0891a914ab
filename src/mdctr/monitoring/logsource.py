"""A served-request log window: the log's URI and bounds on ``mdctr_served_at``, read through
:func:`mdctr.serving.requestlog.read_request_log` (the one definition of the layout and the columns)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from mdctr.schema import SchemaError
from mdctr.serving.requestlog import (
    LOG_DOMAIN as DOMAIN,
)
from mdctr.serving.requestlog import (
    LOG_MINED_DOMAIN as MINED_DOMAIN,
)
from mdctr.serving.requestlog import (
    LOG_PREDICTION as PREDICTION,
)
from mdctr.serving.requestlog import (
    LOG_REQUEST_ID as REQUEST_ID,
)
from mdctr.serving.requestlog import (
    LOG_SERVED_AT as SERVED_AT,
)
from mdctr.serving.requestlog import (
    LOG_VERSION as VERSION,
)
from mdctr.serving.requestlog import (
    log_files,
    read_request_log,
)

__all__ = [
    "DOMAIN",
    "MINED_DOMAIN",
    "PREDICTION",
    "REQUEST_ID",
    "SERVED_AT",
    "VERSION",
    "Window",
    "iter_window",
]


@dataclass(frozen=True)
class Window:
    """A log window: ``uri`` (directory or ``s3://`` prefix) and optional bounds on ``mdctr_served_at``
    (``since`` inclusive, ``until`` exclusive; timezone-aware UTC)."""

    uri: str
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> str:
        lo = self.since.isoformat() if self.since else "start"
        hi = self.until.isoformat() if self.until else "end"
        return f"{self.uri} [{lo}, {hi})"


def parse_time(text: str | None, *, what: str) -> datetime | None:
    """``2026-12-01`` or ``2026-12-01T06:00`` (UTC unless an offset is given) → aware datetime; ``""`` → None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SchemaError(
            f"{what}: {text!r} is not an ISO date or time; expected e.g. 2026-12-01 or 2026-12-01T06:00"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iter_window(
    window: Window, columns: Sequence[str], *, batch_rows: int = 1 << 16
) -> Iterator[pa.RecordBatch]:
    """Record batches (``columns``, in that order) of the window's rows, oldest file first; one batch in memory
    at a time. Raises :class:`SchemaError` when the log holds no file at all."""
    if not log_files(window.uri):
        raise SchemaError(f"{window.uri}: no request-log files (date=YYYY-MM-DD/part-*.parquet) found")
    yield from read_request_log(
        window.uri, list(columns), since=window.since, until=window.until, batch_size=batch_rows
    )
