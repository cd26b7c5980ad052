"""The HTTP server's own defences: time limits per request phase and a cap on
open connections, for gunicorn's uvicorn workers (h11).

uvicorn closes an idle keep-alive connection after `keepalive` (620 s, past the
Google LB's 600 s) but has no limit on how long a request may take to ARRIVE:
a client sending one header line every few seconds kept its connection (and a
file descriptor) forever; 9,000 of them exhausted the descriptors. Here each
connection is in one phase at a time:

- waiting for a request's headers (a new connection, or bytes of the next
  request on a kept-alive one): at most HTTP_HEADER_TIMEOUT, then it is closed
  with 408;
- receiving the body: at most HTTP_BODY_TIMEOUT from the last header, then the
  connection is closed (the app sees the client leave: 499);
- idle between requests: uvicorn's keep-alive timer, untouched, so the LB's
  long-lived connections keep working.

An answer sent before the request's body arrived (the upload's 413 on its
Content-Length, a 422 for a wrong Content-Type) ends the connection: the rest of
that body will never be read, so the server half-closes after the answer, drops
whatever still arrives for LINGER_S, then closes (a plain close with unread data
would reset the connection and could destroy the answer in flight). It used to
leave the client uploading into a connection nobody read until HTTP_BODY_TIMEOUT.

At most MAX_CONNECTIONS_PER_WORKER connections are open per worker. A new one
over the cap first evicts the oldest connection still waiting for its headers
(a slow client loses its slot to a fresh one, and real requests, whose headers
arrive in one packet, almost never wait); with none to evict it gets 503.
Timeouts and evictions are counted and logged once per LOG_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

from app.settings import Settings

log = logging.getLogger("img2pdf.server")

LOG_INTERVAL_S = 60.0
# How long an early-answered connection drains its unread body before closing.
LINGER_S = 2.0


def _raw_response(status: str, code: str, detail: str, extra: str = "") -> bytes:
    """A complete JSON error answer written straight to the socket (no app involved)."""
    body = json.dumps({"detail": detail, "code": code}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"{extra}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_REFUSED = _raw_response(
    "503 Service Unavailable", "busy", "Too many open connections.", "retry-after: 2\r\n"
)
_TIMED_OUT = _raw_response(
    "408 Request Timeout", "request_timeout", "The request took too long to arrive."
)
_BAD_REQUEST = _raw_response("400 Bad Request", "bad_request", "Malformed HTTP request.")


class _Counters:
    """Per-process counts of what the limits did, logged at most once per interval."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.since = time.monotonic()
        self.logged_at: float | None = None

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        now = time.monotonic()
        if self.logged_at is None or now - self.logged_at >= LOG_INTERVAL_S:
            log.warning(
                "connection limits applied",
                extra={"fields": {**self.counts, "seconds": round(now - self.since, 1)}},
            )
            self.counts = {}
            self.since = self.logged_at = now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header/body timeouts and a connection cap."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 1000
    # Connections still waiting for their headers, oldest first (per process).
    waiting: ClassVar[OrderedDict[GuardedH11Protocol, None]] = OrderedDict()
    counters: ClassVar[_Counters] = _Counters()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._phase_timer: asyncio.TimerHandle | None = None
        self._phase = ""

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """The limits from the settings (per process; the app calls this at start)."""
        cls.header_timeout_s = settings.header_timeout_s
        cls.body_timeout_s = settings.body_timeout_s
        cls.max_connections = settings.max_connections

    # --- phases -------------------------------------------------------------

    def _set_phase(self, phase: str) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        if self._phase_timer is not None:
            self._phase_timer.cancel()
            self._phase_timer = None
        if phase == "headers":
            self.waiting[self] = None
            self._phase_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)
            return
        self.waiting.pop(self, None)
        if phase == "body":
            self._phase_timer = self.loop.call_later(self.body_timeout_s, self._timed_out)

    def _follow(self) -> None:
        """Pick the phase from h11's view of the client's side."""
        if self.transport.is_closing():
            self._set_phase("closed")
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Bytes of a request arrived but not all its headers yet.
            self._set_phase("headers" if self.conn.trailing_data[0] else self._phase or "idle")
        elif state is h11.SEND_BODY:
            self._set_phase("body")
        else:
            self._set_phase("app")

    def _linger(self) -> None:
        """The answer is out, the request body is not: half-close, drain, close."""
        self._set_phase("linger")
        self._phase_timer = self.loop.call_later(LINGER_S, self._close_lingering)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # after the buffered answer: the client sees EOF

    def _close_lingering(self) -> None:
        self._phase_timer = None
        self._set_phase("closed")
        self.transport.close()

    def _timed_out(self) -> None:
        self._phase_timer = None
        self.counters.add(f"{self._phase}_timeout")
        if self._phase == "headers" and self.conn.our_state is h11.IDLE:
            self.transport.write(_TIMED_OUT)
        self._set_phase("closed")
        self.transport.close()

    # --- protocol events ------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            oldest = next((p for p in self.waiting if p is not self), None)
            if oldest is None:
                self.counters.add("refused")
                self._set_phase("closed")
                transport.write(_REFUSED)
                transport.close()
                return
            self.counters.add("evicted")
            oldest._set_phase("closed")
            oldest.transport.close()
        # A new connection owes its first request within the header timeout.
        self._set_phase("headers")

    def data_received(self, data: bytes) -> None:
        if self._phase == "linger":
            return  # the rest of a body nobody will read
        super().data_received(data)
        self._follow()

    def eof_received(self) -> bool | None:
        if self._phase == "linger":
            self._close_lingering()  # the client has stopped sending: close now
            return None
        return super().eof_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            self._linger()
            return
        # Idle under uvicorn's keep-alive timer, unless a pipelined request is here.
        self._set_phase("idle")
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_phase("closed")
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (or headers past h11's 16 KiB): the usual JSON error."""
        self._set_phase("closed")
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(_BAD_REQUEST)
        self.transport.close()


class Worker(UvicornWorker):
    """gunicorn worker: uvicorn with the guarded protocol, and the TCP peer kept as
    the client address (the app reads X-Forwarded-For itself, from the LB only).
    `create_app` configures the protocol's limits in each worker process."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "app.server:GuardedH11Protocol",
        "proxy_headers": False,
    }
