"""The served-request log: what ``mdctr serve --log`` writes and ``mdctr monitor`` reads (one definition of the
layout, the columns, the writer and the reader).

Layout::

    <DIR or s3://bucket/prefix>/date=YYYY-MM-DD/part-<unix_ms>-<uuid8>.parquet

hive-style partitions by the UTC serving date; every file holds ≥ 1 row, zstd-compressed, and appears whole
(local: written to a hidden ``.part-….tmp`` beside it, then renamed; S3: one ``put_object``, so no partial
object is ever listed). One row per scored row (a request of n rows gives n log rows):

* the schema's raw feature columns by their schema names, as the request sent them: sparse columns as strings
  (``str(value)``, so that int and str ids mix safely), dense columns float64 (null = a missing value of a
  nullable dense column); the schema's domain column when the request carried it (null otherwise): the id
  (int64), or the raw domain value as a string (``str``) for data with raw domain values
  (:attr:`mdctr.data.encode.FeatureSpec.domain_values`);
* :data:`LOG_COLUMNS`: ``mdctr_request_id`` (``X-Request-Id`` or a uuid4 hex, ``:``, row index),
  ``mdctr_served_at`` (timestamp[ms, UTC]), ``mdctr_model``, ``mdctr_version``, ``mdctr_domain`` (int32, the
  hand-crafted routing domain; null when the model does not route by it), ``mdctr_mined_domain`` (int32, the
  mined code: an external miner's or the model's own; null when none), ``mdctr_prediction`` (float64).

The request path only appends a reference to the already-parsed columns and the scores to a bounded in-memory
queue (:meth:`RequestLog.submit`, a lock and a deque, no copy, no I/O); a full queue drops the record and counts
it — a request never waits for the log. A background thread turns the queued records into Arrow tables and
writes them every ``flush_rows`` rows or ``flush_seconds`` seconds, and once more on :meth:`RequestLog.close`
(the server's lifespan shutdown, which SIGTERM reaches).
"""

from __future__ import annotations

import collections
import datetime as dt
import io
import itertools
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mdctr.schema import FeatureSchema

log = logging.getLogger(__name__)

LOG_REQUEST_ID = "mdctr_request_id"
LOG_SERVED_AT = "mdctr_served_at"
LOG_MODEL = "mdctr_model"
LOG_VERSION = "mdctr_version"
LOG_DOMAIN = "mdctr_domain"
LOG_MINED_DOMAIN = "mdctr_mined_domain"
LOG_PREDICTION = "mdctr_prediction"
#: the columns every log file carries after the schema's feature (and domain) columns, in file order
LOG_COLUMNS: tuple[str, ...] = (
    LOG_REQUEST_ID,
    LOG_SERVED_AT,
    LOG_MODEL,
    LOG_VERSION,
    LOG_DOMAIN,
    LOG_MINED_DOMAIN,
    LOG_PREDICTION,
)
#: the hive partition key (the UTC serving date, ``YYYY-MM-DD``)
PARTITION_KEY = "date"
FILE_PREFIX = "part-"
FILE_SUFFIX = ".parquet"
COMPRESSION = "zstd"
#: the most characters of an ``X-Request-Id`` header (longer ones are refused with 400)
MAX_REQUEST_ID_CHARS = 128
_LOG_TYPES: dict[str, pa.DataType] = {
    LOG_REQUEST_ID: pa.string(),
    LOG_SERVED_AT: pa.timestamp("ms", tz="UTC"),
    LOG_MODEL: pa.string(),
    LOG_VERSION: pa.string(),
    LOG_DOMAIN: pa.int32(),
    LOG_MINED_DOMAIN: pa.int32(),
    LOG_PREDICTION: pa.float64(),
}

DEFAULT_QUEUE_ROWS = 200_000
DEFAULT_FLUSH_ROWS = 20_000
DEFAULT_FLUSH_SECONDS = 10.0
LOG_ENV_PREFIX = "MDCTR_SERVE_LOG"


class RequestLogError(ValueError):
    """A log destination or setting that cannot work (one line naming it)."""


# -- the layout ----------------------------------------------------------------------------------------------
def log_schema(schema: FeatureSchema, *, raw_domain_values: bool = False) -> pa.Schema:
    """The Arrow schema of a log file for ``schema``'s data: features, domain column, :data:`LOG_COLUMNS`.

    ``raw_domain_values``: the data has raw domain values (strings in the log) instead of ids (int64).
    """
    cols = [pa.field(c, pa.string()) for c in schema.sparse]
    cols += [pa.field(c, pa.float64()) for c in schema.dense]
    cols.append(pa.field(schema.domain, pa.string() if raw_domain_values else pa.int64()))
    cols += [pa.field(c, _LOG_TYPES[c]) for c in LOG_COLUMNS]
    return pa.schema(cols)


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` → (``bucket``, ``prefix``) (prefix without slashes at either end)."""
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise RequestLogError(f"request log {uri!r}: expected s3://BUCKET[/PREFIX]")
    return parsed.netloc, parsed.path.strip("/")


def file_name(served_ms: int) -> str:
    """``part-<unix_ms>-<uuid8>.parquet``: sorts by time; the uuid keeps workers and replicas apart."""
    return f"{FILE_PREFIX}{served_ms}-{uuid.uuid4().hex[:8]}{FILE_SUFFIX}"


def partition(date: dt.date) -> str:
    return f"{PARTITION_KEY}={date.isoformat()}"


def endpoint_url() -> str | None:
    """The S3 endpoint boto3 uses here: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (None: AWS)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem() -> Any:
    """A :class:`pyarrow.fs.S3FileSystem` on :func:`endpoint_url` (credentials and region from the environment)."""
    from pyarrow import fs

    kwargs: dict[str, Any] = {}
    endpoint = endpoint_url()
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    return fs.S3FileSystem(**kwargs)


def log_files(uri: str) -> list[str]:
    """Every log file under ``uri`` (local paths, or ``bucket/key`` paths for S3), sorted by partition and name
    (i.e. by serving time). Temporary files of a write in progress are not listed."""
    if is_s3(uri):
        from pyarrow import fs

        bucket, prefix = _split_s3(uri)
        base = f"{bucket}/{prefix}".rstrip("/")
        infos = s3_filesystem().get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        paths = [i.path for i in infos if i.type == fs.FileType.File]
    else:
        root = Path(uri)
        paths = (
            [str(p) for p in root.glob(f"{PARTITION_KEY}=*/{FILE_PREFIX}*{FILE_SUFFIX}")]
            if root.is_dir()
            else []
        )
    return sorted(p for p in paths if _is_log_file(p))


def _is_log_file(path: str) -> bool:
    parent, _, name = path.rpartition("/")
    return (
        name.startswith(FILE_PREFIX)
        and name.endswith(FILE_SUFFIX)
        and parent.rpartition("/")[2].startswith(f"{PARTITION_KEY}=")
    )


def read_request_log(
    uri: str,
    columns: Sequence[str] | FeatureSchema | None = None,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    batch_size: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """Stream the log under ``uri`` (a directory or ``s3://bucket/prefix``) as record batches, oldest file first.

    ``columns``: the columns to read (names), or a :class:`FeatureSchema` (its log columns: features, domain,
    :data:`LOG_COLUMNS`), or None (every column of the files). ``since`` / ``until`` keep rows with
    ``since <= mdctr_served_at < until`` (timezone-aware datetimes; naive ones are taken as UTC) and skip whole
    date partitions outside. Memory stays flat: one batch of at most ``batch_size`` rows at a time. An empty
    log (no file yet) yields nothing.
    """
    files = log_files(uri)
    if not files:
        return
    filesystem = s3_filesystem() if is_s3(uri) else None
    part = pads.partitioning(pa.schema([(PARTITION_KEY, pa.string())]), flavor="hive")
    if filesystem is None:
        base = str(Path(uri))
    else:
        bucket, prefix = _split_s3(uri)
        base = f"{bucket}/{prefix}".rstrip("/")
    dataset = pads.dataset(
        files, format="parquet", filesystem=filesystem, partitioning=part, partition_base_dir=base
    )
    if isinstance(columns, FeatureSchema):
        columns = [*columns.serving_columns, *LOG_COLUMNS]
    names = [n for n in dataset.schema.names if n != PARTITION_KEY] if columns is None else list(columns)
    missing = [c for c in names if c not in dataset.schema.names]
    if missing:
        raise RequestLogError(
            f"request log {uri}: no column(s) {missing}; the files hold {dataset.schema.names}"
        )
    expr = None
    for bound, op in ((since, "ge"), (until, "lt")):
        if bound is None:
            continue
        when = bound if bound.tzinfo else bound.replace(tzinfo=dt.UTC)
        ts = pa.scalar(when, type=pa.timestamp("ms", tz="UTC"))
        day = when.astimezone(dt.UTC).date().isoformat()
        served, key = pads.field(LOG_SERVED_AT), pads.field(PARTITION_KEY)
        term = (served >= ts) & (key >= day) if op == "ge" else (served < ts) & (key <= day)
        expr = term if expr is None else expr & term
    scanner = dataset.scanner(columns=names, filter=expr, batch_size=batch_size)
    for batch in scanner.to_batches():
        if batch.num_rows:
            yield batch


# -- settings ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestLogSettings:
    """Where and how much ``mdctr serve`` logs (``--log``, ``--log-sample``, …; ``MDCTR_SERVE_LOG``,
    ``MDCTR_SERVE_LOG_SAMPLE``, ``MDCTR_SERVE_LOG_QUEUE_ROWS``, …).

    Attributes:
        uri: a local directory or ``s3://bucket/prefix``.
        sample: share of requests logged, in [0, 1]; the decision is a hash of the request id, so a retried
            request with the same ``X-Request-Id`` is logged (or not) again, and every worker agrees.
        queue_rows: rows held in memory (queued or being written) per worker; a request that does not fit is
            dropped from the log (and counted), never delayed.
        flush_rows: write a file once this many rows are queued.
        flush_seconds: write a file at least this often while rows are queued.
    """

    uri: str
    sample: float = 1.0
    queue_rows: int = DEFAULT_QUEUE_ROWS
    flush_rows: int = DEFAULT_FLUSH_ROWS
    flush_seconds: float = DEFAULT_FLUSH_SECONDS

    def __post_init__(self) -> None:
        if not self.uri:
            raise RequestLogError("request log: empty destination; give a directory or s3://BUCKET/PREFIX")
        if not 0.0 <= self.sample <= 1.0:
            raise RequestLogError(f"request log sample rate must be in [0, 1]; got {self.sample!r}")
        for name in ("queue_rows", "flush_rows", "flush_seconds"):
            if not getattr(self, name) > 0:
                raise RequestLogError(f"request log {name} must be > 0; got {getattr(self, name)!r}")

    @staticmethod
    def _env_name(field_name: str) -> str:
        return LOG_ENV_PREFIX if field_name == "uri" else f"{LOG_ENV_PREFIX}_{field_name.upper()}"

    def to_env(self) -> dict[str, str]:
        """The settings as ``MDCTR_SERVE_LOG[_<FIELD>]`` variables (how uvicorn's workers receive them)."""
        return {
            self._env_name(f.name): self.uri if f.name == "uri" else repr(getattr(self, f.name))
            for f in fields(self)
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RequestLogSettings | None:
        """The settings from ``MDCTR_SERVE_LOG[_<FIELD>]``; None when ``MDCTR_SERVE_LOG`` is unset or empty."""
        env = os.environ if env is None else env
        uri = env.get(LOG_ENV_PREFIX, "")
        if not uri:
            return None
        from mdctr.config import ConfigError, numbers_from_env

        try:
            values = numbers_from_env(cls, env, cls._env_name, skip=("uri",))
        except ConfigError as e:
            raise RequestLogError(str(e)) from None
        return cls(uri=uri, **values)


def check_destination(uri: str) -> None:
    """Fail fast (one line) when ``uri`` cannot take log files: a local path that is not a writable directory
    (created if missing), an S3 bucket that does not answer."""
    if is_s3(uri):
        import botocore.exceptions

        bucket, _ = _split_s3(uri)
        try:
            _s3_client().head_bucket(Bucket=bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise RequestLogError(
                f"request log {uri}: bucket {bucket!r} not reachable at {endpoint_url() or 'AWS'}: {e}"
            ) from None
        return
    path = Path(uri)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RequestLogError(f"request log {uri}: cannot create the directory: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RequestLogError(f"request log {uri}: directory is not writable")


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3")  # endpoint (AWS_ENDPOINT_URL_S3) and credentials from the environment


# -- the writer ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Record:
    """One scored request, as the request path hands it over (references only; converted by the writer).

    Attributes:
        request_id: the request's id (without the row suffix).
        served_ms: serving time, unix milliseconds (UTC).
        cols: the parsed :class:`mdctr.serving.request.Columns` (sparse raw values, dense [N, D], domain ids [N]).
        pctr: float64 [N].
        domain: int [N] hand-crafted routing domain, or None.
        mined: int [N] mined code, or None.
        rows: N.
    """

    request_id: str
    served_ms: int
    cols: Any
    pctr: np.ndarray
    domain: np.ndarray | None
    mined: np.ndarray | None
    rows: int


class RequestLog:
    """The log of one serving process: a bounded queue, filled by :meth:`submit` on the request path and
    drained to parquet files by a background thread. Counters: :meth:`stats`."""

    def __init__(
        self,
        settings: RequestLogSettings,
        *,
        schema: FeatureSchema,
        model: str,
        version: str = "",
        domain_values: Sequence[Any] | None = None,
    ):
        self.settings = settings
        self.schema = schema
        self.model = model
        self.version = version
        #: the raw domain values as logged (str), in id order; None: the domain column holds ids
        self._domain_strings = (
            None if domain_values is None else pa.array([str(v) for v in domain_values], pa.string())
        )
        self.arrow_schema = log_schema(schema, raw_domain_values=domain_values is not None)
        # request ids are unique: a dictionary for them is built and then abandoned (≈ 3× the write time of
        # a batch of 1-row requests); statistics only where a reader filters (the serving time)
        self._parquet_options: dict[str, Any] = {
            "compression": COMPRESSION,
            "use_dictionary": [c for c in self.arrow_schema.names if c != LOG_REQUEST_ID],
            "write_statistics": [LOG_SERVED_AT],
        }
        self._threshold = int(settings.sample * 2**32)  # crc32 of the request id below it → logged
        self._pending: collections.deque[_Record] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._s3: Any = None
        self.held_rows = 0  # queued + being written (what queue_rows bounds)
        self.logged_rows = 0
        self.dropped_rows = 0
        self.failed_rows = 0
        self.files_written = 0
        self.write_errors = 0
        self.unsampled_requests = 0

    # -- request path ------------------------------------------------------------------------------------
    def sampled(self, request_id: str) -> bool:
        """Whether the request with this id is logged (a hash of the id against the sample rate)."""
        if self._threshold >= 2**32:
            return True
        if zlib.crc32(request_id.encode()) < self._threshold:
            return True
        self.unsampled_requests += 1
        return False

    def submit(
        self,
        request_id: str,
        cols: Any,
        pctr: np.ndarray,
        domain: np.ndarray | None = None,
        mined: np.ndarray | None = None,
    ) -> bool:
        """Queue one scored request (never blocks, never copies); False when the queue is full (counted in
        ``dropped_rows``). ``cols`` must not be modified afterwards."""
        n = int(pctr.shape[0])
        record = _Record(request_id, time.time_ns() // 1_000_000, cols, pctr, domain, mined, n)
        with self._lock:
            if self.held_rows + n > self.settings.queue_rows:
                self.dropped_rows += n
                return False
            self.held_rows += n
            self._pending.append(record)
            queued = self.held_rows
        if queued >= self.settings.flush_rows:
            self._wake.set()
        return True

    def stats(self) -> dict[str, Any]:
        """Counters of this process since it started (JSON-ready)."""
        return {
            "enabled": True,
            "uri": self.settings.uri,
            "sample": self.settings.sample,
            "logged_rows": self.logged_rows,
            "dropped_rows": self.dropped_rows,
            "failed_rows": self.failed_rows,
            "files_written": self.files_written,
            "write_errors": self.write_errors,
            "held_rows": self.held_rows,
            "unsampled_requests": self.unsampled_requests,
            "queue_rows": self.settings.queue_rows,
        }

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mdctr-request-log", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued and stop the writer (idempotent); waits at most ``timeout`` seconds."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "request log: writer still busy after %.0f s; %d rows may be lost",
                    timeout,
                    self.held_rows,
                )
        else:
            self._flush()
        log.info("request log closed: %s", self.stats())

    def _run(self) -> None:
        next_flush = time.monotonic() + self.settings.flush_seconds
        while not self._closing.is_set():
            self._wake.wait(max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            if self._closing.is_set():
                break
            if self.held_rows >= self.settings.flush_rows or time.monotonic() >= next_flush:
                self._flush()
                next_flush = time.monotonic() + self.settings.flush_seconds
        self._flush()

    def _flush(self) -> None:
        """Write every queued record (one file per UTC date among them)."""
        with self._lock:
            records = list(self._pending)
            self._pending.clear()
        if not records:
            return
        by_date: dict[dt.date, list[_Record]] = {}
        for r in records:
            by_date.setdefault(_utc_date(r.served_ms), []).append(r)
        for date, group in sorted(by_date.items()):
            rows = sum(r.rows for r in group)
            try:
                self._write(date, self._table(group), group[0].served_ms)
                self.logged_rows += rows
                self.files_written += 1
            except Exception as e:  # any failure of a write must not end the writer
                self.write_errors += 1
                self.failed_rows += rows
                log.warning("request log: writing %d rows to %s failed: %s", rows, self.settings.uri, e)
        with self._lock:
            self.held_rows -= sum(r.rows for r in records)

    # -- conversion and output ---------------------------------------------------------------------------
    def _table(self, records: list[_Record]) -> pa.Table:
        """Records → one Arrow table of :attr:`arrow_schema`. Per-value work runs in Arrow's C++ (int → string
        casts, the request-id join), not in Python: the writer shares the GIL with the event loop."""
        s = self.schema
        counts = np.fromiter((r.rows for r in records), np.int64, len(records))
        n = int(counts.sum())
        arrays: list[pa.Array] = [_as_strings([r.cols.sparse[c] for r in records]) for c in s.sparse]
        dense = np.concatenate([r.cols.dense for r in records]) if s.dense else np.empty((n, 0))
        for j in range(len(s.dense)):
            arrays.append(pa.array(dense[:, j], pa.float64(), from_pandas=True))  # NaN (missing) → null
        ids = np.concatenate([r.cols.domain for r in records])
        index = pa.array(ids, pa.int64(), mask=ids < 0)  # null: the request left the optional column out
        arrays.append(index if self._domain_strings is None else self._domain_strings.take(index))
        owner = np.repeat(np.arange(len(records)), counts)  # the record of each row
        row_in_request = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        request_ids = pa.array([r.request_id for r in records], pa.string()).take(pa.array(owner))
        arrays.append(
            pc.binary_join_element_wise(request_ids, pa.array(row_in_request).cast(pa.string()), ":")
        )
        served = np.fromiter((r.served_ms for r in records), np.int64, len(records))[owner]
        arrays.append(pa.array(served, pa.int64()).cast(pa.timestamp("ms", tz="UTC")))
        arrays.append(pa.repeat(pa.scalar(self.model, pa.string()), n))
        arrays.append(pa.repeat(pa.scalar(self.version, pa.string()), n))
        arrays.append(_optional_codes([r.domain for r in records], counts))
        arrays.append(_optional_codes([r.mined for r in records], counts))
        arrays.append(pa.array(np.concatenate([r.pctr for r in records]), pa.float64()))
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema)

    def _write(self, date: dt.date, table: pa.Table, served_ms: int) -> None:
        name = file_name(served_ms)
        uri = self.settings.uri
        if is_s3(uri):
            bucket, prefix = _split_s3(uri)
            key = "/".join(p for p in (prefix, partition(date), name) if p)
            sink = io.BytesIO()
            pq.write_table(table, sink, **self._parquet_options)
            if self._s3 is None:
                self._s3 = _s3_client()
            self._s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())  # whole object or none
            return
        folder = Path(uri) / partition(date)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"  # hidden: neither log_files nor pyarrow's discovery lists it
        try:
            pq.write_table(table, tmp, **self._parquet_options)
            os.replace(tmp, folder / name)
        finally:
            tmp.unlink(missing_ok=True)


def _utc_date(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def _as_strings(parts: list[Sequence[Any]]) -> pa.Array:
    """One sparse column's per-record values (validated: all ints or all strings) → a string array equal to
    ``str(value)`` per value; ints are cast by Arrow (same decimal form as ``str``)."""
    flat = list(itertools.chain.from_iterable(parts))
    try:
        arr = pa.array(flat)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed kinds: not from a validated request
        return pa.array([str(v) for v in flat], pa.string())
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_integer(arr.type):
        return arr.cast(pa.string())
    return pa.array([str(v) for v in flat], pa.string())


def _optional_codes(parts: list[np.ndarray | None], counts: np.ndarray) -> pa.Array:
    """Per-record int code arrays (None: no code for that record's rows) → one int32 array with nulls."""
    if all(p is None for p in parts):
        return pa.nulls(int(counts.sum()), pa.int32())
    if all(p is not None for p in parts):
        return pa.array(np.concatenate(parts).astype(np.int32), pa.int32())
    values = np.concatenate(
        [
            np.zeros(c, np.int32) if p is None else np.asarray(p, np.int32)
            for p, c in zip(parts, counts, strict=True)
        ]
    )
    mask = np.concatenate([np.full(c, p is None) for p, c in zip(parts, counts, strict=True)])
    return pa.array(values, pa.int32(), mask=mask)
