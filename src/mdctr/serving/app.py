"""The production scoring server: a plain ASGI app (run by uvicorn) over :class:`mdctr.serving.Predictor`.

Endpoints:

* KServe Open Inference Protocol v2: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
  ``GET /v2/models/{name}`` (metadata), ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``
  (one input tensor per serving column, output ``pctr`` FP64 [N]); ``/versions/{v}`` forms are accepted too;
* MLflow's scoring protocol: ``POST /invocations`` with ``dataframe_split`` (or ``dataframe_records``) JSON →
  ``{"predictions": [...]}``, and ``GET /ping``.

Why a hand-written ASGI callable and not a framework: a 1-row request is dominated by per-request overhead,
and routing eight fixed paths needs no more than a dict. Every response, error or not, is JSON written by
orjson; errors are ``{"error": msg}`` on v2 routes and ``{"error_code": ..., "message": msg}`` on
``/invocations`` (MLflow's shape). Limits: the body size (413, checked on ``Content-Length`` before reading and
while reading), the rows per request (413), exactly one JSON content type (415; two → 400), JSON nesting (orjson
refuses more than 1024 levels: 400), a key repeated in one JSON object (400 naming it). ``HEAD`` is answered
wherever ``GET`` is. Connection-level limits (header/body deadlines, header size and count, idle timeout,
connection cap) live in :mod:`mdctr.serving.protocol`. Prediction runs inline on the event loop: its cost is
bounded by the row limit, and no thread hand-off is paid on small requests.

Every answer to a ``POST`` carries ``X-Request-Id``: the request's own header when sent (1–128 visible ASCII
characters, else 400), or a new uuid4 hex. With a served-request log (``mdctr serve --log``,
:mod:`mdctr.serving.requestlog`) a sampled request's parsed columns, predictions and routing domains are put on a
bounded queue after scoring (dropped and counted when it is full; never waited for), and ``GET /v2/requestlog``
answers the log's counters for the worker that takes the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import orjson

import mdctr
from mdctr.serving.request import (
    DEFAULT_MAX_ABS_Z,
    DEFAULT_MAX_ROWS,
    RequestError,
    excerpt,
)
from mdctr.serving.requestlog import MAX_REQUEST_ID_CHARS, RequestLog, RequestLogSettings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# 128, not 64: a request counts while its body is read, so 64 slow-body clients must not take every slot
# before the body deadline cuts them (buffered bodies stay bounded by 128 × max_body_bytes per worker)
DEFAULT_MAX_CONCURRENT = 128
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_KEEP_ALIVE_S = 5.0
DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_BACKLOG = 2048
OUTPUT_NAME = "pctr"
ENV_PREFIX = "MDCTR_SERVE_"
#: the request id header: taken from the request when sent (else a uuid4 hex), always echoed in the response
REQUEST_ID_HEADER = b"x-request-id"
#: the scope key under which a request's id travels from ``__call__`` to its handler
_SCOPE_REQUEST_ID = "mdctr.request_id"
#: GET: the served-request log's counters of this worker (``{"enabled": false}`` without ``--log``)
REQUEST_LOG_PATH = "/v2/requestlog"


@dataclass(frozen=True)
class ServeLimits:
    """Request and connection limits of the server (all configurable from ``mdctr serve`` flags or the
    ``MDCTR_SERVE_<FIELD>`` environment variables, e.g. ``MDCTR_SERVE_BODY_TIMEOUT``).

    Attributes:
        max_body_bytes: largest request body; larger → 413 (before it is read, when Content-Length says so).
        max_rows: most rows one request may carry; more → 413.
        max_abs_z: dense values further than this many training standard deviations from the training mean → 400.
        max_concurrent: requests one worker handles at once (reading bodies included); more → 503. Bounds the
            memory of buffered bodies to ``max_concurrent × max_body_bytes`` per worker.
        max_header_bytes: request line + headers of one request, bytes; more → 431 and the connection closed.
        max_headers: header fields per request; more → 431.
        header_timeout: seconds from a request's first byte to the end of its headers; later → 408, closed.
        body_timeout: seconds from the end of the headers to the end of the body; later → 408, closed.
        keep_alive_timeout: seconds an idle connection (new, or between requests) stays open.
        max_connections: open connections per worker; a connection accepted above it is answered 503 on
            everything but the health probes (``/v2/health/live``, ``/v2/health/ready``, ``/ping``, …) and closed.
        backlog: the listen socket's accept queue (the kernel caps it at ``net.core.somaxconn``).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    max_abs_z: float = DEFAULT_MAX_ABS_Z
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    backlog: int = DEFAULT_BACKLOG

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"serve limit {f.name} must be > 0; got {value!r}")

    def to_env(self) -> dict[str, str]:
        """The limits as ``MDCTR_SERVE_<FIELD>`` variables (how uvicorn's workers receive them)."""
        return {f"{ENV_PREFIX}{f.name.upper()}": repr(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None) -> ServeLimits:
        """The limits from ``MDCTR_SERVE_<FIELD>`` variables; unset ones keep their defaults."""
        from mdctr.config import numbers_from_env

        env = os.environ if env is None else env
        return cls(**numbers_from_env(cls, env, lambda name: f"{ENV_PREFIX}{name.upper()}"))


_JSON_HEADERS = [(b"content-type", b"application/json")]
_OPTS = orjson.OPT_SERIALIZE_NUMPY


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ScoringApp:
    """The ASGI application. ``predictor`` is a loaded :class:`mdctr.serving.Predictor`."""

    def __init__(
        self,
        predictor: Any,
        *,
        model_name: str,
        model_version: str = "",
        limits: ServeLimits | None = None,
        request_log: RequestLog | None = None,
    ):
        """``request_log``: where scored requests are recorded (``mdctr serve --log``); started and flushed by
        the ASGI lifespan (uvicorn runs its shutdown on SIGTERM/SIGINT)."""
        self.predictor = predictor
        self.model_name = model_name
        self.model_version = model_version
        self.limits = limits or ServeLimits()
        self.request_log = request_log
        self._in_flight = 0
        parser = predictor.parser
        self._metadata = orjson.dumps(
            {
                "name": model_name,
                "versions": [model_version] if model_version else [],
                "platform": "mdctr-pytorch",
                "inputs": parser.input_metadata(),  # an input the model does not need says "optional"
                "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}],
                "parameters": {
                    "model": predictor.info.model_name,
                    "domain_source": predictor.info.domain_source,
                    "max_rows": self.limits.max_rows,
                    "max_body_bytes": self.limits.max_body_bytes,
                },
            }
        )
        self._server_metadata = orjson.dumps(
            {"name": "mdctr", "version": mdctr.__version__, "extensions": []}
        )
        v2_model = f"/v2/models/{model_name}"
        versions = [v2_model] + ([f"{v2_model}/versions/{model_version}"] if model_version else [])
        # path → (method, handler); a fixed table, no pattern matching per request
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[None]]]] = {
            "/ping": ("GET", self._ok(b"{}")),
            "/health": ("GET", self._ok(b"{}")),
            "/v2/health/live": ("GET", self._ok(b'{"live":true}')),
            "/v2/health/ready": ("GET", self._ok(b'{"ready":true}')),
            "/v2": ("GET", self._ok(self._server_metadata)),
            REQUEST_LOG_PATH: ("GET", self._log_stats),
            "/invocations": ("POST", self._invocations),
        }
        for base in versions:
            self._routes[base] = ("GET", self._ok(self._metadata))
            self._routes[f"{base}/ready"] = (
                "GET",
                self._ok(orjson.dumps({"name": model_name, "ready": True})),
            )
            self._routes[f"{base}/infer"] = ("POST", self._infer)

    # -- ASGI ----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        v2 = path.startswith("/v2")
        route = self._routes.get(path)
        if scope["method"] == "POST":  # scoring routes (and wrong paths): every answer carries the request id
            send = _with_request_id(scope, send)
        try:
            if route is None:
                raise _HTTPError(404, self._not_found(path))
            method, handler = route
            # HEAD is GET without the body (uvicorn drops the body of a HEAD response)
            if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
                raise _HTTPError(405, f"{path} accepts {method} only")
            if method == "GET":  # health and metadata: constant answers, never refused (probes stay green)
                await handler(scope, receive, send)
                return
            if self._in_flight >= self.limits.max_concurrent:
                raise _HTTPError(503, f"server busy: {self._in_flight} requests in flight; retry later")
            _request_id(scope)  # a malformed X-Request-Id is refused before the body is read
            self._in_flight += 1
            try:
                await handler(scope, receive, send)
            finally:
                self._in_flight -= 1
        except _HTTPError as e:
            await _send(send, e.status, _error_body(e.status, e.message, v2))
        except RequestError as e:
            await _send(send, e.status, _error_body(e.status, str(e), v2))
        except Exception:  # never a stack trace or a non-JSON body to the client
            log.exception("internal error on %s", path)
            await _send(send, 500, _error_body(500, "internal server error", v2))

    def _not_found(self, path: str) -> str:
        """The 404 text for ``path``: names the served model (and version) when the path is a model route."""
        parts = path.split("/")  # "", "v2", "models", NAME, ["versions", V], [ready|infer]
        if not path.startswith("/v2/models/") or len(parts) < 4:
            return f"no such endpoint: {excerpt(path)}"
        name = parts[3]
        if name != self.model_name:
            return f"model {excerpt(name)} not found; this server serves {self.model_name!r}"
        if len(parts) >= 6 and parts[4] == "versions":
            served = (
                f"version {self.model_version!r}"
                if self.model_version
                else "no numbered version (use /v2/models/" + self.model_name + "/…)"
            )
            return (
                f"model {self.model_name!r} has no version {excerpt(parts[5])}; this server serves {served}"
            )
        return f"no such endpoint: {excerpt(path)}"

    async def _log_stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.request_log.stats() if self.request_log is not None else {"enabled": False}
        await _send(send, 200, orjson.dumps(stats))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.request_log is not None:
                    self.request_log.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.request_log is not None:  # the last batch lands before the worker exits
                    await asyncio.to_thread(self.request_log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _ok(body: bytes) -> Callable[..., Awaitable[None]]:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await _send(send, 200, body)

        return handler

    # -- request bodies ------------------------------------------------------------------------------------
    async def _json_body(self, scope: Scope, receive: Receive) -> Any:
        content_type = length = None
        for k, v in scope["headers"]:
            if k == b"content-type":
                if content_type is not None:  # which one would win is a proxy's guess: refuse both
                    raise _HTTPError(400, "more than one Content-Type header; send exactly one")
                content_type = v
            elif k == b"content-length":
                length = v
        if content_type is None:
            raise _HTTPError(415, "missing Content-Type; send application/json")
        if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            raise _HTTPError(
                415,
                f"unsupported Content-Type {excerpt(content_type.decode('latin-1'))}; send application/json",
            )
        limit = self.limits.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise _HTTPError(400, "invalid Content-Length") from None
            if declared > limit:
                raise _HTTPError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _HTTPError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # stop reading: the rest of the body is never buffered
                raise _HTTPError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not body:
            raise _HTTPError(400, "empty request body; expected valid JSON")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            # orjson's message names the position, never the body; cut it anyway
            raise _HTTPError(400, f"request body is not valid JSON: {str(e)[:120]}") from None
        _refuse_duplicate_keys(body)
        return parsed

    def _predict(self, scope: Scope, cols: Any) -> np.ndarray:
        rlog = self.request_log
        rid = _request_id(scope)
        logged = rlog is not None and rlog.sampled(rid)
        scored = self.predictor.score_columns(cols, routes=logged)
        out = scored.pctr
        if not np.isfinite(out).all():  # cannot happen for range-checked inputs; never send NaN as JSON
            raise _HTTPError(500, "the model produced a non-finite prediction")
        if logged:  # a reference to the parsed columns and scores on a bounded queue: no copy, no I/O
            rlog.submit(rid, cols, out, scored.domain, scored.mined)  # type: ignore[union-attr]
        return out

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._json_body(scope, receive)
        if not isinstance(body, dict):
            raise RequestError("expected a JSON object with key 'dataframe_split' or 'dataframe_records'")
        keys = set(body) - {"params"}
        parser = self.predictor.parser
        if keys == {"dataframe_split"}:
            cols = parser.from_split(body["dataframe_split"])
        elif keys == {"dataframe_records"}:
            cols = parser.from_records(body["dataframe_records"])
        else:
            raise RequestError(
                f"expected exactly one of 'dataframe_split', 'dataframe_records'; got keys {excerpt(sorted(keys))}"
            )
        out = self._predict(scope, cols)
        await _send(send, 200, orjson.dumps({"predictions": out}, option=_OPTS))

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._json_body(scope, receive)
        cols = self.predictor.parser.from_v2(body)
        outputs = body.get("outputs")
        if outputs is not None:
            names = (
                [o.get("name") if isinstance(o, dict) else o for o in outputs]
                if isinstance(outputs, list)
                else [outputs]
            )
            if any(n != OUTPUT_NAME for n in names):
                raise RequestError(
                    f"v2 request: unknown output(s) {excerpt(names)}; this model has {OUTPUT_NAME!r}"
                )
        out = self._predict(scope, cols)
        response: dict[str, Any] = {"model_name": self.model_name}
        if self.model_version:
            response["model_version"] = self.model_version
        if "id" in body:
            response["id"] = body["id"]
        response["outputs"] = [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [len(out)], "data": out}]
        await _send(send, 200, orjson.dumps(response, option=_OPTS))


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    """``object_pairs_hook`` of :data:`_DUPLICATE_CHECK`: raises on the first key seen twice in one object."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _HTTPError(
                400, f"request body has the key {excerpt(key)} twice in one object; send it once"
            )
        seen.add(key)


# orjson (like most parsers) keeps the last of two equal keys silently, and offers no hook; the stdlib decoder's
# object_pairs_hook sees every key. It runs after orjson accepted the body (so orjson's strictness — no NaN,
# valid UTF-8, ≤ 1024 levels — is what decides validity) and builds nothing kept: the hook returns None.
_DUPLICATE_CHECK = json.JSONDecoder(object_pairs_hook=_unique_pairs)  # type: ignore[arg-type]


def _refuse_duplicate_keys(body: bytes) -> None:
    """400 naming the key if any JSON object in ``body`` (already valid JSON) repeats a key."""
    try:
        _DUPLICATE_CHECK.decode(body.decode("utf-8"))
    except RecursionError:  # deeper than the stdlib decoder goes; orjson accepted it, so it is ≤ 1024 levels
        raise _HTTPError(400, "request body nests too deeply") from None


def _error_body(status: int, message: str, v2: bool) -> bytes:
    if v2:
        return orjson.dumps({"error": message})
    code = {
        400: "BAD_REQUEST",
        404: "ENDPOINT_NOT_FOUND",
        413: "REQUEST_LIMIT_EXCEEDED",
        503: "TEMPORARILY_UNAVAILABLE",
    }.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    return orjson.dumps({"error_code": code, "message": message})


async def _send(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _request_id(scope: Scope) -> str:
    """The request's id: its ``X-Request-Id`` header (1–128 visible ASCII characters, sent once), else a new
    uuid4 hex; computed once per request and kept in the scope."""
    rid = scope.get(_SCOPE_REQUEST_ID)
    if rid is not None:
        return rid
    sent = [v for k, v in scope["headers"] if k == REQUEST_ID_HEADER]
    rid = uuid.uuid4().hex
    scope[_SCOPE_REQUEST_ID] = rid  # also what an error answer below carries
    if len(sent) > 1:
        raise _HTTPError(400, "more than one X-Request-Id header; send at most one")
    if sent:
        value = sent[0]
        if not 0 < len(value) <= MAX_REQUEST_ID_CHARS or not all(0x21 <= b <= 0x7E for b in value):
            raise _HTTPError(
                400,
                f"X-Request-Id must be 1–{MAX_REQUEST_ID_CHARS} visible ASCII characters; "
                f"got {excerpt(value.decode('latin-1'))}",
            )
        rid = value.decode("ascii")
        scope[_SCOPE_REQUEST_ID] = rid
    return rid


def _with_request_id(scope: Scope, send: Send) -> Send:
    """``send`` that adds ``X-Request-Id`` (the request's id, see :func:`_request_id`) to the response start."""

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            rid = scope.get(_SCOPE_REQUEST_ID) or _request_id_quiet(scope)
            message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, rid.encode("ascii"))]
        await send(message)

    return sending


def _request_id_quiet(scope: Scope) -> str:
    """:func:`_request_id` for an answer given before the id was checked (404, 405, 503): a bad header then
    gets a fresh id instead of a second error."""
    try:
        return _request_id(scope)
    except _HTTPError:
        return str(scope[_SCOPE_REQUEST_ID])


# -- the uvicorn factory: each worker process builds its app from environment variables ----------------------
def app_from_env() -> ScoringApp:
    """Build the app in a worker: the bundle directory and limits come from ``MDCTR_SERVE_*`` variables set by
    :func:`mdctr.serving.server.run_server` (uvicorn starts workers by import string)."""
    import torch

    from mdctr.serving.bundle import Predictor

    threads = int(os.environ.get(f"{ENV_PREFIX}TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    limits = ServeLimits.from_env()
    bundle = os.environ[f"{ENV_PREFIX}BUNDLE"]
    predictor = Predictor.load(bundle, max_rows=limits.max_rows, max_abs_z=limits.max_abs_z)
    model_name = os.environ[f"{ENV_PREFIX}MODEL_NAME"]
    model_version = os.environ.get(f"{ENV_PREFIX}MODEL_VERSION", "")
    settings = RequestLogSettings.from_env()
    request_log = None
    if settings is not None:
        request_log = RequestLog(
            settings,
            schema=predictor.spec.schema,
            model=model_name,
            version=model_version,
            domain_values=predictor.spec.domain_values,
        )
        log.info("worker %d logs %.0f%% of requests to %s", os.getpid(), 100 * settings.sample, settings.uri)
    app = ScoringApp(
        predictor, model_name=model_name, model_version=model_version, limits=limits, request_log=request_log
    )
    log.info(
        "worker %d serving %s from %s (%d torch thread(s))", os.getpid(), app.model_name, bundle, threads
    )
    return app
