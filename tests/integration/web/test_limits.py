"""Resource limits: request bodies, event batches, and concurrent webhook deliveries per endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from litestar import Litestar
from prometheus_client import REGISTRY

from billing import jobs
from billing.core.context import AppContext
from billing.metering.event_routes import BATCH_BODY_LIMIT
from billing.metering.ingest import MAX_BATCH
from billing.web.auth import Scope
from billing.webhooks import dispatcher
from tests.conftest import TenantHandle, subscribe
from tests.integration.invoicing.test_invoice_lifecycle import call
from tests.integration.web.test_auth import assert_problem
from tests.integration.webhooks.test_webhook_deliveries import card_event, deliver, deliveries, new_customer

SLOW_SECONDS = 0.5


# --- request bodies -------------------------------------------------------------------------------


async def _chunks(size: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield b'{"name": "'
    for _ in range(size // chunk):
        yield b"a" * chunk
    yield b'"}'


async def test_a_chunked_body_over_the_limit_answers_413_without_a_content_length(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    headers = {**tenant.headers(), "content-type": "application/json"}
    response = await client.patch("/v1/tenant", headers=headers, content=_chunks(ctx.settings.max_body_bytes))
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    tenant_now = await client.get("/v1/tenant", headers=tenant.headers())
    assert tenant_now.json()["name"] == "Acme"


async def test_a_body_just_under_the_limit_is_read(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    padding = ctx.settings.max_body_bytes - len(b'{"name": ""}') - 1
    headers = {**tenant.headers(), "content-type": "application/json"}
    response = await client.patch(
        "/v1/tenant", headers=headers, content=b'{"name": "' + b"a" * padding + b'"}'
    )
    assert_problem(response, 422, "validation_error")  # read and validated (too long a name), not refused


async def test_a_client_that_hangs_up_mid_body_is_not_counted_as_a_server_error(
    app: Litestar, tenant: TenantHandle
) -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"id": "cut', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in tenant.headers(Scope.INGEST).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
        "root_path": "", "headers": [*headers, (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    errors_before = REGISTRY.get_sample_value("billing_unhandled_errors_total") or 0.0
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(message for message in sent if message["type"] == "http.response.start")
    assert start["status"] == 400
    assert (REGISTRY.get_sample_value("billing_unhandled_errors_total") or 0.0) == errors_before


# --- event batches --------------------------------------------------------------------------------


@pytest.fixture
async def metered(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    await call(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, status=201)
    await subscribe(client, tenant, ["c1"], starts_at="2026-11-01T00:00:00Z")
    return tenant


def _event(n: int, properties: dict[str, str] | None = None) -> dict[str, Any]:
    event = {"id": f"e{n}", "customer": "c1", "meter": "calls", "timestamp": "2026-11-21T11:00:00Z"}
    return event | ({"properties": properties} if properties else {})


async def test_a_full_batch_over_the_general_body_limit_is_accepted(
    client: httpx.AsyncClient, ctx: AppContext, metered: TenantHandle
) -> None:
    properties = {"note": "x" * 2000}
    events = [_event(n, properties) for n in range(MAX_BATCH)]
    body = httpx.Request("POST", "/", json={"events": events}).content
    assert ctx.settings.max_body_bytes < len(body) < BATCH_BODY_LIMIT
    response = await client.post(
        "/v1/events/batch", headers=metered.headers(Scope.INGEST), json={"events": events}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == MAX_BATCH


async def test_a_batch_body_over_the_batch_limit_answers_413(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    headers = {**metered.headers(Scope.INGEST), "content-type": "application/json"}
    oversized = b'{"events": [{"id": "' + b"x" * BATCH_BODY_LIMIT + b'"}]}'
    response = await client.post("/v1/events/batch", headers=headers, content=oversized)
    assert_problem(response, 413, "payload_too_large")


async def test_a_batch_of_more_than_1000_events_is_refused_whole(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    events = [_event(n) for n in range(MAX_BATCH + 1)]
    response = await client.post(
        "/v1/events/batch", headers=metered.headers(Scope.INGEST), json={"events": events}
    )
    assert_problem(response, 422, "validation_error")
    event = await client.get("/v1/events/e0", headers=metered.headers())
    assert_problem(event, 404, "not_found")


# --- concurrent webhook deliveries per endpoint ----------------------------------------------------


class CountingReceiver:
    """Answers 200 after ``delay`` seconds; counts the requests it is answering at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = self.max_in_flight = 0
        self.arrivals: list[float] = []
        self.completions: list[float] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver._enter()
                time.sleep(receiver.delay)
                receiver._leave()
                with suppress(OSError):
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 64

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.arrivals.append(time.monotonic())

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.completions.append(time.monotonic())


@contextmanager
def counting_receiver(delay: float) -> Iterator[CountingReceiver]:
    receiver = CountingReceiver(delay)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


async def test_a_slow_endpoint_holds_at_most_4_deliveries_while_another_endpoint_is_served(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    events = ["customer.payment_method_expiring"]
    customer = await new_customer(client, tenant)
    with counting_receiver(SLOW_SECONDS) as slow, counting_receiver(0) as fast:
        slow_endpoint = await call(
            client, tenant, "/v1/webhook-endpoints", {"url": slow.url, "events": events}, status=201
        )
        for _ in range(10):
            await card_event(ctx, tenant.id, customer["id"])
        await jobs.dispatch_outbox(ctx)  # ten deliveries queued for the slow endpoint alone
        fast_endpoint = await call(
            client, tenant, "/v1/webhook-endpoints", {"url": fast.url, "events": events}, status=201
        )
        for _ in range(3):
            await card_event(ctx, tenant.id, customer["id"])

        await deliver(ctx)

    assert slow.max_in_flight == dispatcher.PER_ENDPOINT_CONCURRENCY
    assert len(slow.completions) == 13
    assert len(fast.arrivals) == 3
    assert max(fast.arrivals) < min(slow.completions), "the fast endpoint waited for the slow one"
    for endpoint in (slow_endpoint, fast_endpoint):
        statuses = {d["status"] for d in await deliveries(client, tenant, endpoint["id"], limit=100)}
        assert statuses == {"delivered"}
