"""Connection limits uvicorn's httptools protocol lacks: deadlines for a request's headers and body, a bound on
header bytes and count, an idle timeout for new connections, and a connection cap that spares health probes.

uvicorn bounds some of this itself and those settings are used (``timeout_keep_alive`` between requests,
``backlog``); what it lacks (uvicorn issue #157: no request-start or request-complete timeout; the httptools
parser has no header-size setting, only h11's ``h11_max_incomplete_event_size`` exists) is added here as a
subclass of :class:`uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`. Parsing stays httptools'
(llhttp): this class only counts bytes and header callbacks, arms timers, and answers refusals itself.

Per connection:

* idle (just accepted, or between requests): closed after ``keep_alive_timeout`` (uvicorn arms this between
  requests; it never did for a connection that has sent nothing yet);
* from a request's first byte: its line and headers must arrive within ``header_timeout`` and
  ``max_header_bytes``, with at most ``max_headers`` fields → else 408 / 431 and the connection closed;
* from the end of its headers: the body must arrive within ``body_timeout`` → else 408 (when no response was
  started) and closed; the app's pending ``receive()`` then sees a disconnect;
* a connection accepted while the worker already holds ``max_connections`` is "over the cap": a health probe
  on it is answered as usual, any other request gets 503 and the connection is closed, and it is closed after
  :data:`OVER_CAP_IDLE_S` if it sends nothing, so an attacker's sockets cost the probes nothing.

Refusals are ``{"error": message}`` JSON with ``Connection: close``. The limits come from
:meth:`mdctr.serving.app.ServeLimits.from_env` (the ``MDCTR_SERVE_*`` variables ``run_server`` sets).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mdctr.serving.app import ServeLimits

log = logging.getLogger(__name__)

#: paths answered even on a connection over the cap (Kubernetes/KServe probes and MLflow's /ping)
HEALTH_PATHS = frozenset({b"/v2/health/live", b"/v2/health/ready", b"/ping", b"/health", b"/v2"})

#: seconds a connection accepted over the cap may stay idle before its first request
OVER_CAP_IDLE_S = 1.0

_IDLE, _HEADERS, _BODY, _DONE = range(4)
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


@functools.cache
def _limits() -> ServeLimits:
    return ServeLimits.from_env()


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal itself is kept on the protocol."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines, header bounds and connection cap of :class:`ServeLimits`
    (select it with ``uvicorn.run(..., http="mdctr.serving.protocol:GuardedHttpToolsProtocol")``)."""

    def __init__(self, *args: Any, limits: ServeLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or _limits()
        self._phase = _IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._over_cap = False

    # -- timers ----------------------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close_idle(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _header_deadline(self) -> None:
        self._deadline = None
        self._refuse(408, f"request headers not received within {self.limits.header_timeout:g} s")

    def _body_deadline(self) -> None:
        self._deadline = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app already answered (e.g. 413): just stop waiting for the rest
        else:
            self._refuse(408, f"request body not received within {self.limits.body_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close the connection (no app involved)."""
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": message})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b"Error"), len(body), body)
        )
        self.transport.close()
        log.warning("refused a request from %s: %d %s", self.client, status, message)

    # -- connection ------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_cap = len(self.connections) > self.limits.max_connections
        # over the cap a connection may still carry a probe, which is sent at once: do not wait long for it
        idle = (
            min(self.limits.keep_alive_timeout, OVER_CAP_IDLE_S)
            if self._over_cap
            else self.limits.keep_alive_timeout
        )
        self._arm(idle, self._close_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _start_request(self) -> None:
        self._phase = _HEADERS
        self._header_bytes = self._header_count = 0
        self._arm(self.limits.header_timeout, self._header_deadline)

    def data_received(self, data: bytes) -> None:
        # what uvicorn's data_received does, plus the byte count and our own refusals on a parser stop
        if self._phase in (_IDLE, _DONE):
            self._start_request()
        if self._phase == _HEADERS:
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # checked after parsing: bytes of a chunk that completed the headers may be body, not header
        if self._phase == _HEADERS and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                f"request line and headers exceed {self.limits.max_header_bytes} bytes (--max-header-bytes)",
            )

    # -- parser callbacks ------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._phase != _HEADERS:  # a pipelined request in the same chunk as the previous one
            self._start_request()
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} header fields (--max-headers)")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._over_cap:
            path = self.url.split(b"?", 1)[0].rstrip(b"/")
            if path not in HEALTH_PATHS and not path.endswith(b"/ready"):
                self._refusal = (
                    503,
                    f"server at its connection cap ({self.limits.max_connections} per worker); retry later",
                )
                raise _Refused
        self._phase = _BODY
        self._arm(self.limits.body_timeout, self._body_deadline)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _DONE
        self._disarm()  # idle from here: uvicorn arms its keep-alive timer once the response is sent
        super().on_message_complete()
