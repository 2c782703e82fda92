"""Deadlines for clients that send a request slowly (slowloris), for ``billing serve``.

uvicorn bounds the idle time between requests (``timeout_keep_alive``), but not how long a client
may take to send its head or its body, nor (with httptools, its fast C parser) how large a head
may grow: a client that opens a connection and sends one byte every few seconds holds it, and a
slot of ``limit_concurrency``, forever. This protocol answers 400 to a head over 16 KiB, and
closes the connection when the head has not arrived within ``header_seconds`` of the connection
opening or of its first byte (the keep-alive timeout bounds the wait for that byte on a kept-alive
connection), or the body within ``body_seconds`` of the head.

It lives at the HTTP protocol because the head arrives before any ASGI code runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from billing.core.settings import Settings

CLOSED = Counter("billing_slow_clients_closed_total", "Connections closed for sending too slowly", ["phase"])
log = structlog.get_logger("billing.web.slow_clients")
MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(Exception):
    pass


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for the request head and body, and a bound on
    the size of a head (httptools has none: it would buffer an endless header line)."""

    header_seconds: float = 10.0
    body_seconds: float = 60.0
    max_head_bytes: int = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # the deadline that runs now
        self._parsing: str | None = None  # what the parser waits for: "headers", "body" or None
        self._head_bytes = 0  # received while the head is incomplete
        self._parsed_head_bytes = 0  # of the URL and headers parsed so far
        self._deadline: asyncio.TimerHandle | None = None

    # Ignored override: uvicorn's protocol, like this one, takes the asyncio.Transport it is given,
    # narrower than the BaseTransport of asyncio.BaseProtocol.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._parsing == "headers":
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._enter(None)
                self.send_400_response("Request head too large.")
                return
        # A request that arrived whole leaves nothing to wait for: no timer is set at all.
        self._enter(self._parsing)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsing, self._head_bytes, self._parsed_head_bytes = "headers", 0, 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._parsing = "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._parsing = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    def _count_head(self, size: int) -> None:
        """A head that arrives whole is counted as it is parsed: raising here makes the parser
        fail, and uvicorn answer 400 and close."""
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_head_bytes:
            raise HeadTooLarge(f"request head over {self.max_head_bytes} bytes")

    def _enter(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.header_seconds if phase == "headers" else self.body_seconds
            self._deadline = self.loop.call_later(seconds, self._too_slow, phase)

    def _too_slow(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        CLOSED.labels(phase).inc()
        log.warning("slow_client_closed", phase=phase, client=self.client[0] if self.client else None)
        self.transport.close()


def deadline_protocol(header_seconds: float, body_seconds: float) -> type[DeadlineProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with these deadlines."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_seconds": header_seconds, "body_seconds": body_seconds},
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """How ``billing serve`` runs uvicorn (benchmarks run it the same way).

    Slow clients: a head over 16 KiB answers 400; an idle keep-alive connection closes after 5 s;
    a head or a body that takes longer than its deadline closes the connection.
    """
    return {
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "limit_concurrency": 2048,
        "http": deadline_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),
        "timeout_keep_alive": 5,
    }
