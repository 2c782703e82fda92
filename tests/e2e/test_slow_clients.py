"""Slow-client protection of ``billing serve``, over raw sockets to a real server.

A client that sends its request head or body slowly (slowloris) is disconnected at the deadline
(BILLING_HEADER_TIMEOUT_SECONDS / BILLING_BODY_TIMEOUT_SECONDS, short here), an oversized head is
refused, and other clients are served meanwhile.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve import Server, run_cli

HEADER_SECONDS = 1.0
BODY_SECONDS = 2.0
SLACK_SECONDS = 3.0  # scheduling on a busy 2-core machine
TRICKLE_INTERVAL = 0.2


@dataclass
class SlowTarget:
    server: Server
    admin_key: str

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=5)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowTarget]:
    data_dir: Path = tmp_path_factory.mktemp("slow-clients")
    env = {
        "BILLING_SCHEDULER": "off",
        "BILLING_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "BILLING_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
    }
    run_cli(data_dir, "migrate", **env)
    tenant = json.loads(run_cli(data_dir, "tenant", "create", "--name", "Slow", "--json", **env).stdout)
    server = Server(data_dir, **env)
    try:
        server.wait_ready()
        yield SlowTarget(server, tenant["api_key"])
        assert "Traceback" not in server.stderr, server.stderr
    finally:
        server.kill()


def closed_after(sock: socket.socket, trickle: bytes, limit: float, started: float) -> float:
    """Send ``trickle`` a byte at a time until the server closes the connection; the seconds from
    ``started`` (a ``time.monotonic()``) until then."""
    remaining = iter(trickle)
    while time.monotonic() - started < limit:
        readable, _, _ = select.select([sock], [], [], TRICKLE_INTERVAL)
        if readable and _drained(sock):
            return time.monotonic() - started
        byte = next(remaining, None)
        if byte is not None:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - started
    raise AssertionError(f"the server kept a slow connection open for {limit} s")


def _drained(sock: socket.socket) -> bool:
    """Whether the server closed its side (reading whatever it answered first)."""
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


def served_quickly(target: SlowTarget) -> None:
    started = time.monotonic()
    response = httpx.get(f"{target.server.base_url}/v1/tenant", headers=_auth(target), timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0


def _auth(target: SlowTarget) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.admin_key}"}


def test_a_connection_that_never_sends_a_request_is_closed_at_the_header_deadline(
    target: SlowTarget,
) -> None:
    started = time.monotonic()
    with target.connect() as sock:
        elapsed = closed_after(sock, b"", HEADER_SECONDS + SLACK_SECONDS, started)
    assert elapsed >= HEADER_SECONDS * 0.8


def test_a_head_sent_a_byte_at_a_time_is_closed_at_the_header_deadline_while_others_are_served(
    target: SlowTarget,
) -> None:
    head = b"GET /v1/tenant HTTP/1.1\r\nHost: billing\r\n" + b"X-Padding: " + b"a" * 200
    started = time.monotonic()
    with ExitStack() as stack:
        slow = [stack.enter_context(target.connect()) for _ in range(20)]
        for sock in slow[1:]:
            sock.sendall(head[:10])  # nineteen more connections stuck in their heads
        served_quickly(target)
        elapsed = closed_after(slow[0], head, HEADER_SECONDS + SLACK_SECONDS, started)
        served_quickly(target)
    assert elapsed >= HEADER_SECONDS * 0.8


def test_a_body_sent_a_byte_at_a_time_is_closed_at_the_body_deadline(target: SlowTarget) -> None:
    body = json.dumps({"id": "slow-1", "customer": "c", "meter": "m", "timestamp": "2026-01-01T00:00:00Z"})
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: billing\r\nAuthorization: Bearer {target.admin_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with target.connect() as sock:
        sock.sendall(head)
        started = time.monotonic()
        elapsed = closed_after(sock, body.encode(), BODY_SECONDS + SLACK_SECONDS, started)
        served_quickly(target)
    assert elapsed >= BODY_SECONDS * 0.8
    event = httpx.get(f"{target.server.base_url}/v1/events/slow-1", headers=_auth(target), timeout=5)
    assert event.status_code == 404  # nothing of the half-sent event was taken


def test_an_incomplete_request_head_over_16_kib_answers_400(target: SlowTarget) -> None:
    head = b"GET /v1/tenant HTTP/1.1\r\nHost: billing\r\nX-Padding: " + b"a" * (17 * 1024)
    with target.connect() as sock:
        sock.sendall(head)  # and the rest never comes
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    served_quickly(target)


def test_a_whole_request_head_over_16_kib_answers_400_and_one_under_is_served(target: SlowTarget) -> None:
    auth = f"Authorization: Bearer {target.admin_key}\r\n".encode()
    for padding, status in ((17 * 1024, b"400"), (14 * 1024, b"200")):
        head = b"GET /v1/tenant HTTP/1.1\r\nHost: billing\r\n" + auth
        head += b"X-Padding: " + b"a" * padding + b"\r\nConnection: close\r\n\r\n"
        with target.connect() as sock:
            sock.sendall(head)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:80]


def test_a_normal_request_on_a_kept_alive_connection_is_unaffected(target: SlowTarget) -> None:
    with httpx.Client(base_url=target.server.base_url, headers=_auth(target), timeout=5) as client:
        first = client.get("/v1/tenant")
        time.sleep(HEADER_SECONDS * 1.5)  # idle, but within the keep-alive timeout
        second = client.get("/v1/tenant")
    assert (first.status_code, second.status_code) == (200, 200)
