"""Deadlines for clients that send a request slowly (slowloris), for ``billing serve``.

uvicorn bounds the size of an incomplete request head (``h11_max_incomplete_event_size``) and the
idle time between requests (``timeout_keep_alive``), but not how long a client may take to send
its head or its body: a client that opens a connection and sends one byte every few seconds holds
it, and a slot of ``limit_concurrency``, forever. This protocol closes the connection when the
head has not arrived within ``header_seconds`` of the first chance to send it (the connection
opening, or the previous response ending), or the body within ``body_seconds`` of the head.

It lives at the HTTP protocol because the head arrives before any ASGI code runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import structlog
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

from billing.settings import Settings

CLOSED = Counter("billing_slow_clients_closed_total", "Connections closed for sending too slowly", ["phase"])
log = structlog.get_logger("billing.slow_clients")


class DeadlineH11Protocol(H11Protocol):
    header_seconds: float = 10.0
    body_seconds: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        self._enter("headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None)

    def on_response_complete(self) -> None:
        self._enter(None)  # until the next request starts, the keep-alive timeout applies
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

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


def deadline_protocol(header_seconds: float, body_seconds: float) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with these deadlines."""
    return type(
        "DeadlineH11Protocol",
        (DeadlineH11Protocol,),
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
        "h11_max_incomplete_event_size": 16 * 1024,
        "timeout_keep_alive": 5,
    }
