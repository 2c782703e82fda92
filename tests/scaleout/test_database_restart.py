"""PostgreSQL restarted under traffic: while it is away every request answers 503 (a problem with a
stable code, promptly, never a 500); once it is back the service recovers by itself, without a
restart; nothing acknowledged is lost or counted twice; the worker's ticks resume.

The restart is real: ``pg_ctl stop -m fast`` then ``start`` on a private server (tests/scaleout/
private_postgres.py), with one ``billing serve`` and one ``billing worker`` on it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy import exc as sa_exc

from billing.app import create_app
from billing.core.clock import SystemClock
from billing.core.context import AppContext
from billing.core.db.engine import Database, database_unavailable
from billing.core.scheduler import Tick, run_tick
from billing.core.settings import Settings
from tests import stripe_payloads as sp
from tests.conftest import TEST_SECRET_KEY
from tests.crash.harness import Deployment, Server, free_port, month_start, stamp
from tests.scaleout import ledger
from tests.scaleout.cluster import Laps, admin_client, cluster
from tests.scaleout.load import card_expiring_events
from tests.scaleout.private_postgres import PrivatePostgres

CUSTOMERS = 4
BATCH = 20
STRIPE_SECRET = "whsec_test_restart_0123456789abcdef012345"
# No request may take longer than this, whatever the database is doing.
REQUEST_BOUND_SECONDS = 5.0
# Longer runs (bench/README.md): more restarts, each with the database away for longer.
AWAY_SECONDS = float(os.environ.get("BILLING_TEST_RESTART_AWAY_SECONDS") or "4")
RESTARTS = int(os.environ.get("BILLING_TEST_RESTARTS") or "1")
RECOVERY_BOUND_SECONDS = 10.0
TICK_BOUND_SECONDS = 20.0
UNAVAILABLE_CODES = {"database_unavailable", "event_not_stored"}


@dataclass(frozen=True)
class Answer:
    kind: str
    sent: float
    took: float
    status: int | None  # None: no answer (a transport error or the client's timeout)
    code: str | None
    media_type: str


@dataclass
class Traffic:
    """Clients that keep at it while the database comes and goes: fresh usage batches and Stripe
    deliveries one after the other, each sent again until acknowledged (as SDKs and Stripe do),
    readiness polled in between. Once ``stopping``, it finishes what is not yet acknowledged."""

    client: httpx.AsyncClient
    tenant_id: str
    batches: deque[list[dict[str, Any]]] = field(default_factory=deque)
    deliveries: deque[dict[str, Any]] = field(default_factory=deque)
    posted: list[list[dict[str, Any]]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    stopping: bool = False

    async def run(self) -> None:
        while not self.stopping or self.batches or self.deliveries:
            if not self.stopping:
                self._more()
            await self._next_batch()
            await self._next_delivery()
            await self._ask("ready", "GET", "/health/ready")
            await asyncio.sleep(0.02)

    def _more(self) -> None:
        if not self.batches:
            self.batches.append(usage_batch(len(self.posted)))
            self.posted.append(self.batches[-1])
        if not self.deliveries:
            self.deliveries.append(card_event(len(self.delivered)))
            self.delivered.append(self.deliveries[-1])

    async def _next_batch(self) -> None:
        if not self.batches:
            return
        batch = self.batches.popleft()
        response = await self._ask("batch", "POST", "/v1/events/batch", json={"events": batch})
        if response is None or response.status_code != 200:
            self.batches.append(batch)
            return
        self.acknowledged.update(r["id"] for r in response.json()["results"])

    async def _next_delivery(self) -> None:
        if not self.deliveries:
            return
        event = self.deliveries.popleft()
        payload = sp.encode(event)
        headers = {
            "content-type": "application/json; charset=utf-8",
            "Stripe-Signature": sp.signature_header(payload, STRIPE_SECRET, int(time.time())),
        }
        path = f"/webhooks/stripe/{self.tenant_id}"
        response = await self._ask("stripe", "POST", path, content=payload, headers=headers)
        if response is None or response.status_code != 200:
            self.deliveries.append(event)

    async def _ask(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        sent = time.monotonic()
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.TransportError:
            self.answers.append(Answer(kind, sent, time.monotonic() - sent, None, None, ""))
            return None
        code = response.json().get("code") if response.status_code >= 400 else None
        media_type = response.headers.get("content-type", "")
        self.answers.append(
            Answer(kind, sent, time.monotonic() - sent, response.status_code, code, media_type)
        )
        return response

    def between(self, start: float, end: float) -> list[Answer]:
        """Answers to the requests sent in [start, end)."""
        return [a for a in self.answers if start <= a.sent < end]


def usage_batch(n: int) -> list[dict[str, Any]]:
    at = stamp(month_start(0) + timedelta(minutes=1))
    return [
        {
            "id": f"restart-{n:04d}-{i:02d}",
            "customer": f"c{(n + i) % CUSTOMERS:03d}",
            "meter": "api_calls",
            "timestamp": at,
            "value": str(1 + i % 3),
        }
        for i in range(BATCH)
    ]


def card_event(n: int) -> dict[str, Any]:
    (event,) = card_expiring_events([f"cus_restart{n % CUSTOMERS}"], tag=f"restart{n:04d}")
    return event


async def set_up(client: httpx.AsyncClient) -> None:
    async def call(method: str, path: str, body: Any, status: int) -> None:
        response = await client.request(method, path, json=body)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"

    await call(
        "PATCH", "/v1/tenant", {"grace_period_hours": 0, "stripe_webhook_secrets": [STRIPE_SECRET]}, 200
    )
    await call("POST", "/v1/meters", {"key": "api_calls", "name": "API", "aggregation": "sum"}, 201)
    await call("POST", "/v1/plans", {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": 500}, 201)
    for n in range(CUSTOMERS):
        customer = {"external_id": f"c{n:03d}", "timezone": "UTC", "provider_customer_id": f"cus_restart{n}"}
        await call("POST", "/v1/customers", customer, 201)
        subscription = {"customer": f"c{n:03d}", "plan": "pro", "starts_at": stamp(month_start(-1))}
        await call("POST", "/v1/subscriptions", subscription, 201)


async def wait_ready(server: Server, since: float) -> float:
    """Seconds from ``since`` until the replica answers ready again."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_BOUND_SECONDS) as client:
        while (await client.get("/health/ready")).status_code != 200:
            assert time.monotonic() - since < RECOVERY_BOUND_SECONDS, "not ready again in time"
            await asyncio.sleep(0.05)
    return time.monotonic() - since


async def processed(deployment: Deployment, stripe_event_id: str) -> bool:
    found = await ledger.rows(
        deployment, "SELECT status FROM stripe_events WHERE stripe_event_id = :id", id=stripe_event_id
    )
    return bool(found) and found[0].status == "processed"


@dataclass(frozen=True)
class Restart:
    stopping: float  # monotonic instants
    away: float  # stopped: from here on nothing answers for the database
    starting: float
    back: float
    ready_after: float  # seconds from ``back`` until /health/ready answers 200

    def describe(self, traffic: Traffic) -> str:
        return (
            f"stopped in {self.away - self.stopping:.1f} s, away {self.starting - self.away:.1f} s, "
            f"started in {self.back - self.starting:.1f} s, ready {self.ready_after:.2f} s later; while away "
            f"{summary(traffic.between(self.away, self.starting))}"
        )


async def restart(postgres: PrivatePostgres, server: Server) -> Restart:
    """``pg_ctl stop -m fast``, ``AWAY_SECONDS`` without a database, ``pg_ctl start``; until ready."""
    stopping = time.monotonic()
    await asyncio.to_thread(postgres.stop, "fast")
    away = time.monotonic()
    await asyncio.sleep(AWAY_SECONDS)
    starting = time.monotonic()
    await asyncio.to_thread(postgres.start)
    back = time.monotonic()
    return Restart(stopping, away, starting, back, await wait_ready(server, back))


async def test_a_postgres_restart_answers_503_while_away_then_recovers_losing_nothing(
    private_postgres: PrivatePostgres, private_deployment: Deployment
) -> None:
    deployment = private_deployment
    restarts: list[Restart] = []
    laps = Laps()
    async with cluster(deployment, replicas=1, workers=1) as running:
        laps("start")
        (server,) = running.replicas
        async with admin_client(deployment, server, timeout=REQUEST_BOUND_SECONDS) as client:
            await set_up(client)
            traffic = Traffic(client, deployment.tenant_id)
            flowing = asyncio.create_task(traffic.run())
            for _ in range(RESTARTS):
                await asyncio.sleep(1.5)
                restarts.append(await restart(private_postgres, server))
            await asyncio.sleep(1)
            traffic.stopping = True
            await asyncio.wait_for(flowing, 60)
            laps("traffic and restarts")
            # The worker's ticks resume: an event delivered now is handled by its next stripe tick.
            last_card = card_event(len(traffic.delivered))
            await Traffic(client, deployment.tenant_id, deliveries=deque([last_card]), stopping=True).run()
            await wait_until(lambda: processed(deployment, last_card["id"]), TICK_BOUND_SECONDS)
            laps("worker tick")
            run = await client.post("/v1/billing/run", json={})
            assert run.status_code == 200, run.text
        running.assert_all_running()

    print(f"\nrestarts: {'; '.join(r.describe(traffic) for r in restarts)}; {laps}")
    for done in restarts:
        assert_answers_while_away(traffic.between(done.away, done.starting))
        assert done.ready_after < RECOVERY_BOUND_SECONDS
    assert_never_a_500_nor_a_hang(traffic.answers)
    invoices = await ledger.rows(deployment, "SELECT count(*) FROM invoices WHERE status <> 'draft'")
    assert invoices == [(CUSTOMERS,)], "last month was billed after the restart"
    await assert_nothing_acknowledged_lost(deployment, traffic)
    await assert_each_delivery_stored_once_and_handled(deployment, [*traffic.delivered, last_card])


async def assert_each_delivery_stored_once_and_handled(
    deployment: Deployment, delivered: list[dict[str, Any]]
) -> None:
    """Every Stripe event acknowledged is stored once and handled, except those the worker had claimed
    when the database went away: they wait for their claim's lease (or their retry time, when the
    failure could be recorded), as after a crash, and are handled then."""
    stored = await ledger.rows(
        deployment,
        "SELECT stripe_event_id, status, attempts, claim_expires_at, next_attempt_at FROM stripe_events",
    )
    assert sorted(row.stripe_event_id for row in stored) == sorted(event["id"] for event in delivered)
    now = SystemClock().now()
    waiting = [row for row in stored if row.status != "processed"]
    for row in waiting:
        held = row.claim_expires_at is not None and row.claim_expires_at > now
        retrying = row.attempts >= 1 and row.next_attempt_at > now
        assert row.status == "received" and (held or retrying), row
    ids = [row.stripe_event_id for row in waiting]
    print(f"Stripe events: {len(stored)} stored, {len(ids)} waiting on a claim's lease or a retry {ids[:3]}")


def summary(answers: list[Answer]) -> str:
    counts: dict[str, int] = {}
    for a in answers:
        key = f"{a.kind} {a.status}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {key}" for key, n in sorted(counts.items()))


async def wait_until(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"not done within {seconds} s"
        await asyncio.sleep(0.25)


def assert_answers_while_away(answers: list[Answer]) -> None:
    assert {a.kind for a in answers} == {"batch", "stripe", "ready"}, "traffic went on while it was away"
    wrong = [a for a in answers if a.status != 503 or a.code not in UNAVAILABLE_CODES]
    assert wrong == [], f"answers other than a 503 with a known code while the database was away: {wrong}"
    assert {a.media_type for a in answers} == {"application/problem+json"}


def assert_never_a_500_nor_a_hang(answers: list[Answer]) -> None:
    assert [a for a in answers if a.status is None] == [], "a request got no answer"
    assert [a for a in answers if a.status is not None and a.status >= 500 and a.status != 503] == []
    slowest = max(a.took for a in answers)
    assert slowest < REQUEST_BOUND_SECONDS, f"slowest answer {slowest:.1f} s"


async def assert_nothing_acknowledged_lost(deployment: Deployment, traffic: Traffic) -> None:
    posted = {event["id"] for batch in traffic.posted for event in batch}
    assert traffic.acknowledged == posted, "every batch was acknowledged in the end"
    stored = await ledger.rows(deployment, "SELECT event_id FROM usage_events")
    assert sorted(row.event_id for row in stored) == sorted(posted), "each event stored exactly once"
    expected: dict[str, tuple[Decimal, int]] = {}
    for batch in traffic.posted:
        for event in batch:
            total, count = expected.get(event["customer"], (Decimal(0), 0))
            expected[event["customer"]] = (total + Decimal(event["value"]), count + 1)
    assert await ledger.rollups_by_customer(deployment, month_start(0)) == expected


# --- the mapping itself, without a server to stop --------------------------------------------------


def unreachable_settings(tmp_path: Path) -> Settings:
    """Settings whose PostgreSQL refuses connections: nothing listens on the port."""
    return Settings(
        env="test",
        data_dir=tmp_path,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/billing",
        secret_keys=(TEST_SECRET_KEY,),
        scheduler=False,
        log_level="WARNING",
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/tenant", None),
        ("POST", "/v1/events/batch", {"events": [{"id": "e1", "customer": "c1", "meter": "api_calls"}]}),
        ("POST", "/v1/billing/run", {}),
        ("GET", "/health/ready", None),
    ],
)
async def test_an_unreachable_database_answers_503_database_unavailable_not_500(
    tmp_path: Path, method: str, path: str, body: Any
) -> None:
    app = create_app(unreachable_settings(tmp_path), scheduler=False)
    headers = {"Authorization": "Bearer bk_" + "x" * 43}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            response = await client.request(method, path, json=body, headers=headers)
    finally:
        await app.state.ctx.close()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
    assert "Traceback" not in response.text


def test_a_statement_the_database_rejects_is_not_unavailability() -> None:
    rejected = sa_exc.IntegrityError("INSERT ...", {}, Exception("duplicate key value"))
    assert not database_unavailable(rejected)
    assert database_unavailable(sa_exc.TimeoutError("QueuePool limit reached"))
    lost = sa_exc.OperationalError("SELECT 1", {}, Exception("connection lost"), connection_invalidated=True)
    assert database_unavailable(lost)


def test_a_network_error_outside_the_database_driver_is_not_unavailability() -> None:
    try:
        raise ConnectionRefusedError("an SMTP relay, say")
    except OSError as exc:
        assert not database_unavailable(exc)


async def test_a_refused_connection_from_the_driver_is_unavailability() -> None:
    database = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/billing", pool_size=1)
    try:
        with pytest.raises(OSError) as raised:
            async with database.read() as session:
                await session.execute(sa.text("SELECT 1"))
    finally:
        await database.dispose()
    assert database_unavailable(raised.value)


pytestmark = pytest.mark.timeout(150)


async def test_a_tick_that_finds_the_database_away_is_counted_as_such_not_as_an_error(tmp_path: Path) -> None:
    ctx = AppContext.create(unreachable_settings(tmp_path))
    name = f"probe_{uuid.uuid4().hex[:8]}"

    async def needs_the_database(context: AppContext) -> None:
        await context.database.ping()

    try:
        assert await run_tick(ctx, Tick(name, 5, needs_the_database)) is False
    finally:
        await ctx.close()

    def runs(outcome: str) -> float:
        value = REGISTRY.get_sample_value("billing_tick_runs_total", {"tick": name, "outcome": outcome})
        return value or 0.0

    assert (runs("database_unavailable"), runs("error")) == (1, 0)
