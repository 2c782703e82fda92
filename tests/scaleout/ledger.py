"""What the database says was done: the rows the exactly-once checks count, and the wait for the
workers to finish what is due."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from billing.core.clock import SystemClock
from tests.crash.harness import Deployment

SETTLE_SECONDS = 45.0

# Work that is due and not yet done, by kind; all zero once the workers have caught up.
OUTSTANDING = {
    "stripe events": "SELECT count(*) FROM stripe_events WHERE status = 'received'",
    "outbox rows": "SELECT count(*) FROM outbox WHERE processed_at IS NULL AND failed_at IS NULL"
    " AND available_at <= :now",
    "emails": "SELECT count(*) FROM notifications WHERE status = 'queued' AND next_attempt_at <= :now",
    "webhook deliveries": "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
    " AND next_attempt_at <= :now",
    "pending payments": "SELECT count(*) FROM payments WHERE status = 'pending'",
}


async def rows(deployment: Deployment, sql: str, **params: Any) -> list[sa.Row[Any]]:
    async with deployment.database.read() as session:
        return list((await session.execute(sa.text(sql), params)).all())


async def outstanding(deployment: Deployment, now: datetime) -> dict[str, int]:
    counts = {}
    for name, sql in OUTSTANDING.items():
        (row,) = await rows(deployment, sql, **({"now": now} if ":now" in sql else {}))
        counts[name] = int(row[0])
    return counts


async def settle(deployment: Deployment, now: datetime | None = None) -> float:
    """Wait until nothing is left due (by ``now``, default the wall clock); the seconds it took."""
    started = time.monotonic()
    while True:
        left = await outstanding(deployment, now or SystemClock().now())
        if not any(left.values()):
            return time.monotonic() - started
        assert time.monotonic() - started < SETTLE_SECONDS, f"still due after {SETTLE_SECONDS} s: {left}"
        await asyncio.sleep(0.25)


async def usage_by_customer(deployment: Deployment, since: datetime) -> dict[str, tuple[Decimal, int]]:
    """(sum of values, number of events) per customer external id, from the stored events."""
    found = await rows(
        deployment,
        "SELECT c.external_id, sum(e.value), count(*) FROM usage_events e"
        " JOIN customers c ON c.id = e.customer_id WHERE e.timestamp >= :since GROUP BY c.external_id",
        since=since,
    )
    return {row[0]: (Decimal(row[1]), int(row[2])) for row in found}


async def rollups_by_customer(deployment: Deployment, since: datetime) -> dict[str, tuple[Decimal, int]]:
    """(sum of values, number of events) per customer external id, from the hourly rollups."""
    found = await rows(
        deployment,
        "SELECT c.external_id, sum(r.value_sum), sum(r.event_count) FROM usage_rollups r"
        " JOIN customers c ON c.id = r.customer_id WHERE r.hour >= :since GROUP BY c.external_id",
        since=since,
    )
    return {row[0]: (Decimal(row[1]), int(row[2])) for row in found}


async def invoices(deployment: Deployment) -> list[sa.Row[Any]]:
    return await rows(
        deployment,
        "SELECT i.id, i.subscription_id, i.period_start, i.number, i.status, i.amount_due, i.total,"
        " c.external_id FROM invoices i JOIN customers c ON c.id = i.customer_id ORDER BY i.number",
    )


async def usage_quantities(deployment: Deployment, period_start: datetime) -> dict[str, Decimal]:
    """The quantity of each customer's ``usage`` line on the invoice of the period from ``period_start``."""
    found = await rows(
        deployment,
        "SELECT c.external_id, l.quantity FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
        " JOIN customers c ON c.id = i.customer_id WHERE l.kind = 'usage' AND i.period_start = :start",
        start=period_start,
    )
    return {row[0]: Decimal(row[1]) for row in found}


async def payments(deployment: Deployment) -> list[sa.Row[Any]]:
    return await rows(
        deployment,
        "SELECT invoice_id, attempt, idempotency_key, provider_payment_id, status FROM payments",
    )


async def notifications(deployment: Deployment) -> list[sa.Row[Any]]:
    return await rows(deployment, "SELECT id, kind, dedupe_key, status, from_address FROM notifications")


async def stripe_events(deployment: Deployment) -> list[sa.Row[Any]]:
    return await rows(deployment, "SELECT stripe_event_id, status, attempts FROM stripe_events")


async def outbox_rows(deployment: Deployment, topic: str) -> list[sa.Row[Any]]:
    return await rows(
        deployment, "SELECT event_id, consumer, payload FROM outbox WHERE topic = :topic", topic=topic
    )


async def webhook_deliveries(deployment: Deployment) -> list[sa.Row[Any]]:
    return await rows(
        deployment, "SELECT id, event_id, event_type, status, attempt_count FROM webhook_deliveries"
    )
