"""Ingestion under SIGKILL: ``billing serve`` is killed while two clients post batches of events,
then restarted on the same database, and the clients post again every batch that was not
acknowledged, as a retrying pipeline does.

Accepted means durable: every event acknowledged before a kill (``accepted`` or ``duplicate``
in a 200 answer) is in the database after it, and in the end usage per customer and meter is
the sum of the distinct events posted, however many times a batch was sent.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa

from billing.core.clock import SystemClock
from billing.metering.usage_models import UsageEvent
from tests.crash import scene
from tests.crash.harness import ROUNDS, Api, Deployment, Server, kill_when, month_start, stamp

METERS = ("api_calls", "storage_gb")
CUSTOMERS = 5
BATCH = 50
BATCHES_PER_ROUND = 16
POSTERS = 2
Key = tuple[str, str]  # (customer external id, meter key)


@dataclass
class Pipeline:
    """Clients posting batches; a batch whose answer never came is put back to be posted again."""

    pending: deque[list[dict[str, Any]]]
    acked: set[str] = field(default_factory=set)
    duplicates: int = 0

    async def post(self, client: httpx.AsyncClient) -> None:
        await asyncio.gather(*(self._poster(client) for _ in range(POSTERS)))

    async def _poster(self, client: httpx.AsyncClient) -> None:
        while self.pending:
            batch = self.pending.popleft()
            try:
                response = await client.post("/v1/events/batch", json={"events": batch})
            except httpx.TransportError:
                self.pending.appendleft(batch)
                return
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert {r["status"] for r in results} <= {"accepted", "duplicate"}, results
            self.acked.update(r["id"] for r in results)
            self.duplicates += sum(r["status"] == "duplicate" for r in results)


def make_batches(
    rng: random.Random, start: datetime, end: datetime
) -> tuple[list[list[dict[str, Any]]], dict[Key, Decimal]]:
    """Batches of events with distinct ids and exact decimal values, and the sum of each key."""
    expected: dict[Key, Decimal] = defaultdict(Decimal)
    span = int((end - start).total_seconds())
    batches = []
    for b in range(BATCHES_PER_ROUND * (ROUNDS + 1)):
        batch = []
        for i in range(BATCH):
            customer, meter = f"c{rng.randrange(CUSTOMERS):03d}", rng.choice(METERS)
            value = Decimal(rng.randint(1, 999_999)).scaleb(-3)
            timestamp = start + timedelta(seconds=rng.randrange(span))
            batch.append(
                {
                    "id": f"evt-{b:03d}-{i:03d}",
                    "customer": customer,
                    "meter": meter,
                    "timestamp": stamp(timestamp),
                    "value": str(value),
                }
            )
            expected[(customer, meter)] += value
        batches.append(batch)
    return batches, expected


async def stored(deployment: Deployment) -> list[Any]:
    return await deployment.rows(
        sa.select(UsageEvent.event_id, UsageEvent.customer_id, UsageEvent.meter_id, UsageEvent.value).where(
            UsageEvent.tenant_id == deployment.tenant_id
        )
    )


async def usage_total(api: Api, customer: str, meter: str, start: datetime, end: datetime) -> Decimal:
    path = f"/v1/customers/{customer}/usage?meter={meter}&from={stamp(start)}&to={stamp(end)}"
    buckets = (await api.call("GET", path))["buckets"]
    return sum((Decimal(b["value"]) for b in buckets if b["value"] is not None), Decimal(0))


async def test_no_acknowledged_event_is_lost_and_retried_batches_are_counted_once(
    deployment: Deployment, api: Api, rng: random.Random
) -> None:
    start = month_start(-1)
    meters = {key: await scene.meter(api, key) for key in METERS}
    await scene.plan(api, "unpriced")
    customers = await scene.subscribed_customers(api, CUSTOMERS, plan="unpriced", starts_at=start)
    batches, expected = make_batches(rng, start, SystemClock().now() - timedelta(minutes=10))
    pipeline = Pipeline(deque(batches))
    kills = 0
    for round_ in range(ROUNDS + 1):
        server = await Server.start(deployment, f"serve-{round_}")
        try:
            async with server.client() as client:
                posting = asyncio.create_task(pipeline.post(client))
                if round_ == ROUNDS:
                    await posting
                    break
                target = len(pipeline.acked) + rng.randint(1, BATCHES_PER_ROUND - 1) * BATCH
                kills += await kill_when(
                    server.proc, lambda t=target, p=posting: len(pipeline.acked) >= t or p.done(), rng
                )
                await posting
            found = {row.event_id for row in await stored(deployment)}
            lost = pipeline.acked - found
            assert not lost, f"round {round_}: {len(lost)} acknowledged events lost: {sorted(lost)[:5]}"
        finally:
            await server.proc.kill()
    print(f"{kills} kills; {pipeline.duplicates} events answered duplicate when posted again")
    assert kills == ROUNDS

    rows = await stored(deployment)
    assert not pipeline.pending
    assert sorted(row.event_id for row in rows) == sorted(e["id"] for b in batches for e in b)
    by_id = {value: key for key, value in customers.items()}
    meter_keys = {value: key for key, value in meters.items()}
    totals: dict[Key, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[(by_id[row.customer_id], meter_keys[row.meter_id])] += row.value
    assert totals == expected
    for (customer, meter), value in expected.items():
        assert await usage_total(api, customer, meter, start, month_start(1)) == value, (customer, meter)
