"""A real SMTP server for tests (aiosmtpd on 127.0.0.1) that records what it accepts.

    @pytest.fixture                        # or import the ``smtp_sink`` fixture into a conftest
    def sink() -> Iterator[SmtpSink]:
        with running_sink() as sink:
            yield sink

    async def test_x(sink: SmtpSink, ctx: AppContext) -> None:
        use_smtp(ctx, sink)                 # the app now sends through the sink
        ...
        assert [m["To"] for m in sink.messages] == ["jane@example.com"]

``messages`` are parsed ``email.message.EmailMessage`` objects, in the order accepted.
To make it misbehave: ``stop()`` / ``start()`` (down: connections are refused; up again on the
same port), ``fail_next(n, code)`` (the next n emails are answered ``code`` at DATA, 451 by
default), ``refuse(address, code)`` (RCPT TO that address answered ``code``, 550 by default).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from billing.core.context import AppContext


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    def __init__(self) -> None:
        self.port = _free_port()
        self.messages: list[EmailMessage] = []
        # Every DATA and RCPT the server answered, accepted or not: (command, address or id, code).
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._refused: dict[str, int] = {}
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        if self._controller is None:
            controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
            controller.start()
            self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def fail_next(self, count: int, code: int = 451) -> None:
        """Answer the next ``count`` emails with ``code`` at DATA (4xx: try later; 5xx: rejected)."""
        with self._lock:
            self._fail.extend([code] * count)

    def refuse(self, address: str, code: int = 550) -> None:
        with self._lock:
            self._refused[address.lower()] = code

    def accept(self, address: str) -> None:
        with self._lock:
            self._refused.pop(address.lower(), None)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    # aiosmtpd handler hooks (run on the controller's thread).
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            code = self._refused.get(address.lower())
            self.log.append(("RCPT", address, code or 250))
        if code is not None:
            return f"{code} {'5.1.1' if code >= 500 else '4.2.0'} Recipient refused by the test sink"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            code = self._fail.pop(0) if self._fail else None
            self.log.append(("DATA", str(message["Message-ID"]), code or 250))
            if code is None:
                self.messages.append(message)
        if code is not None:
            return f"{code} {'5.7.1' if code >= 500 else '4.3.0'} Failed by the test sink"
        return "250 OK"


@contextmanager
def running_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_sink() as sink:
        yield sink


def use_smtp(ctx: AppContext, sink: SmtpSink) -> None:
    """Deliver this app's emails through ``sink`` (as ``BILLING_SMTP_URL`` would)."""
    ctx.settings = dataclasses.replace(ctx.settings, smtp_url=sink.url)


def body(message: EmailMessage, subtype: str = "plain") -> str:
    """The text (``plain``) or ``html`` part of a message."""
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()  # type: ignore[attr-defined]
    assert isinstance(content, str)
    return content
