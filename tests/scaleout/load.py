"""The clients of a scaled-out deployment: usage ingestion spread over the replicas (with the retries
a load balancer makes), Stripe's webhook deliveries (with Stripe's redeliveries), billing runs.

Every answer is recorded; the tests then compare what was acknowledged with what the database and
the fakes hold.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests import stripe_payloads as sp
from tests.crash.harness import stamp

Event = dict[str, Any]


def usage_batches(
    rng: random.Random,
    customers: list[str],
    *,
    batches: int,
    size: int,
    start: datetime,
    end: datetime,
    tag: str,
) -> list[list[Event]]:
    """``batches`` batches of ``size`` events with distinct ids, on meter ``api_calls``, at times
    in [start, end), with whole values (so that sums are easy to state exactly)."""
    span = max(int((end - start).total_seconds()), 1)
    return [
        [
            {
                "id": f"{tag}-{b:04d}-{i:04d}",
                "customer": rng.choice(customers),
                "meter": "api_calls",
                "timestamp": stamp(start + timedelta(seconds=rng.randrange(span))),
                "value": str(rng.randint(1, 9)),
            }
            for i in range(size)
        ]
        for b in range(batches)
    ]


def expected_usage(batches: list[list[Event]]) -> dict[str, Decimal]:
    """The sum of values per customer external id."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for batch in batches:
        for event in batch:
            totals[event["customer"]] += Decimal(event["value"])
    return dict(totals)


@dataclass
class Ingestion:
    """Posts batches round-robin over the replicas. Every fourth batch also goes to the next replica
    at the same moment (a hedged or timed-out request the balancer sent again), every fourth
    after the first answer (a client retry): each posting of an event must answer ``accepted``
    or ``duplicate``, and each event must be ``accepted`` exactly once in all."""

    batches: list[list[Event]]
    concurrency: int = 4
    accepted: Counter[str] = field(default_factory=Counter)
    acknowledged: set[str] = field(default_factory=set)
    posts: int = 0

    async def run(self, clients: list[httpx.AsyncClient]) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(n: int, batch: list[Event]) -> None:
            first, second = clients[n % len(clients)], clients[(n + 1) % len(clients)]
            async with gate:
                if n % 4 == 1:
                    await asyncio.gather(self._post(first, batch), self._post(second, batch))
                else:
                    await self._post(first, batch)
                    if n % 4 == 3:
                        await self._post(second, batch)

        await asyncio.gather(*(one(n, batch) for n, batch in enumerate(self.batches)))

    async def _post(self, client: httpx.AsyncClient, batch: list[Event]) -> None:
        response = await client.post("/v1/events/batch", json={"events": batch})
        self.posts += 1
        assert response.status_code == 200, f"{client.base_url}: {response.status_code} {response.text}"
        for result in response.json()["results"]:
            assert result["status"] in ("accepted", "duplicate"), result
            self.acknowledged.add(result["id"])
            if result["status"] == "accepted":
                self.accepted[result["id"]] += 1


def card_expiring_events(provider_customers: list[str], *, tag: str) -> list[dict[str, Any]]:
    """One ``customer.source.expiring`` per customer, each about a card of its own."""
    return [
        sp.event(
            "customer.source.expiring",
            sp.card(customer, id=f"card_{tag}_{n:03d}", exp_month=12, exp_year=2030),
            id=f"evt_{tag}_{n:04d}",
            created=int(time.time()) - 5,
        )
        for n, customer in enumerate(provider_customers)
    ]


@dataclass
class StripeDeliveries:
    """Stripe delivering events to the replicas: every event once, a third of them a second time to
    the other replica at the same moment, a third again after the first answer (Stripe redelivers
    when it does not see a 2xx in time). Every delivery must answer 200."""

    tenant_id: str
    secret: str
    answers: Counter[int] = field(default_factory=Counter)

    async def run(self, clients: list[httpx.AsyncClient], events: list[dict[str, Any]]) -> None:
        async def one(n: int, event: dict[str, Any]) -> None:
            first, second = clients[n % len(clients)], clients[(n + 1) % len(clients)]
            if n % 3 == 0:
                await asyncio.gather(self.deliver(first, event), self.deliver(second, event))
            else:
                await self.deliver(first, event)
                if n % 3 == 1:
                    await self.deliver(second, event)

        await asyncio.gather(*(one(n, event) for n, event in enumerate(events)))

    async def deliver(self, client: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
        payload = sp.encode(event)
        headers = {
            "content-type": "application/json; charset=utf-8",
            "Stripe-Signature": sp.signature_header(payload, self.secret, int(time.time())),
        }
        response = await client.post(f"/webhooks/stripe/{self.tenant_id}", content=payload, headers=headers)
        self.answers[response.status_code] += 1
        assert response.status_code == 200, f"{client.base_url}: {response.status_code} {response.text}"
        return response


async def simultaneous_runs(clients: list[httpx.AsyncClient], body: dict[str, Any]) -> list[dict[str, Any]]:
    """``POST /v1/billing/run`` on every replica at the same moment; their answers."""
    responses = await asyncio.gather(*(client.post("/v1/billing/run", json=body) for client in clients))
    for response in responses:
        assert response.status_code == 200, f"billing run: {response.status_code} {response.text}"
    return [response.json() for response in responses]
