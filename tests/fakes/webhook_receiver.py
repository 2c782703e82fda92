"""A local HTTP receiver for outgoing webhooks: records every request, verifies its signature with
the Standard Webhooks reference library, and answers as told (a status, optionally after a delay).

Runs on 127.0.0.1 in a thread, so the service's real HTTP client talks to it over a socket.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    verified: bool
    verify_error: str | None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default backlog (5) drops connections when dispatchers send together


class WebhookReceiver:
    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.default = Answer()
        self._answers: deque[Answer] = deque()
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def answer(self, *answers: int | Answer) -> None:
        """Answer the next requests with these, in order; then with ``default``."""
        with self._lock:
            self._answers.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def verified_payloads(self) -> list[Any]:
        return [r.json() for r in self.received if r.verified]

    def verify(self, body: bytes, headers: dict[str, str]) -> str | None:
        """None when a known secret verifies the request, else why not."""
        if not self.secrets:
            return "no secret to verify with"
        error = "no secret matched"
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return None
            except WebhookVerificationError as exc:
                error = str(exc)
        return error

    def _next_answer(self) -> Answer:
        with self._lock:
            return self._answers.popleft() if self._answers else self.default

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver._next_answer()
                error = receiver.verify(body, headers)
                receiver._record(Received(self.path, headers, body, answer.status, error is None, error))
                if answer.delay and receiver._stopping.wait(answer.delay):
                    return
                with suppress(OSError):  # the client may have given up (timeouts)
                    self.send_response(answer.status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
