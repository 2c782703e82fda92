"""Two API replicas (scheduler off) and two workers on one PostgreSQL database, under a mixed load:
usage batches spread over both replicas with a load balancer's retries, Stripe deliveries and
redeliveries to both, billing runs on both at the same moment while the workers tick. Every piece
of work is then counted where its side effect lands: each event once in usage, one invoice per
subscription and period with gapless numbers, one charge per payment attempt, each email once at
the SMTP server, each Stripe event handled once, each outgoing webhook delivered.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billing.core.clock import SystemClock
from billing.notifications.delivery import message_id
from billing.payments.providers.sandbox import stripe_like_id
from tests.crash.harness import Deployment, month_start, stamp
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.scaleout import ledger
from tests.scaleout.cluster import Laps, admin_client, cluster
from tests.scaleout.load import (
    Ingestion,
    StripeDeliveries,
    card_expiring_events,
    expected_usage,
    simultaneous_runs,
    usage_batches,
)

CUSTOMERS = 16
DECLINING = "pm_card_chargeDeclinedInsufficientFunds"
STRIPE_SECRET = "whsec_test_scaleout_0123456789abcdef0123"
BILLING_ROUNDS = 2


def external_id(n: int) -> str:
    return f"c{n:03d}"


def payment_method(n: int) -> str:
    """Every fourth customer's card is declined (dunning then emails them)."""
    return DECLINING if n % 4 == 3 else "pm_card_visa"


async def call(client: httpx.AsyncClient, method: str, path: str, body: Any, status: int) -> Any:
    response = await client.request(method, path, json=body)
    assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


async def set_up(client: httpx.AsyncClient, receiver: WebhookReceiver) -> None:
    """A tenant without grace period (periods finalize as soon as they close), a metered plan with a
    base fee, a webhook endpoint for every event type, customers with cards on file, subscribed
    since the start of last month, each with one event last month."""
    tenant = {"grace_period_hours": 0, "stripe_webhook_secrets": [STRIPE_SECRET]}
    await call(client, "PATCH", "/v1/tenant", tenant, 200)
    await call(client, "POST", "/v1/meters", {"key": "api_calls", "name": "API", "aggregation": "sum"}, 201)
    prices = [{"meter": "api_calls", "model": "per_unit", "unit_amount": "0.01"}]
    plan = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": 1000, "prices": prices}
    await call(client, "POST", "/v1/plans", plan, 201)
    endpoint = {"url": receiver.url, "events": ["*"]}
    receiver.secrets.append((await call(client, "POST", "/v1/webhook-endpoints", endpoint, 201))["secret"])
    for n in range(CUSTOMERS):
        customer = {
            "external_id": external_id(n),
            "email": f"{external_id(n)}@example.com",
            "timezone": "UTC",
            "provider_customer_id": f"cus_scale{n:03d}",
            "default_payment_method": payment_method(n),
        }
        await call(client, "POST", "/v1/customers", customer, 201)
        subscription = {"customer": external_id(n), "plan": "pro", "starts_at": stamp(month_start(-1))}
        await call(client, "POST", "/v1/subscriptions", subscription, 201)
    last_month = stamp(month_start(-1) + timedelta(days=1))
    events = [
        {
            "id": f"last-{n}",
            "customer": external_id(n),
            "meter": "api_calls",
            "timestamp": last_month,
            "value": n + 1,
        }
        for n in range(CUSTOMERS)
    ]
    answer = await call(client, "POST", "/v1/events/batch", {"events": events}, 200)
    assert answer["accepted"] == CUSTOMERS


async def mixed_load(
    clients: list[httpx.AsyncClient], ingestion: Ingestion, stripe: StripeDeliveries
) -> list[dict[str, Any]]:
    """Ingestion, Stripe deliveries and rounds of simultaneous billing runs, all at once."""

    async def billing() -> list[dict[str, Any]]:
        answers = []
        for _ in range(BILLING_ROUNDS):
            answers += await simultaneous_runs(clients, {})
            await asyncio.sleep(0.3)
        return answers

    events = card_expiring_events([f"cus_scale{n:03d}" for n in range(CUSTOMERS)], tag="scale")
    _, _, runs = await asyncio.gather(ingestion.run(clients), stripe.run(clients, events), billing())
    return runs


async def test_two_replicas_and_two_workers_do_every_piece_of_work_exactly_once(
    deployment: Deployment, smtp_sink: SmtpSink, receiver: WebhookReceiver
) -> None:
    now = SystemClock().now()
    this_month, next_month = month_start(0), month_start(1)
    batches = usage_batches(
        random.Random(20261121),
        [external_id(n) for n in range(CUSTOMERS)],
        batches=32,
        size=50,
        start=this_month,
        end=now - timedelta(minutes=1),
        tag="load",
    )
    ingestion = Ingestion(batches)
    stripe = StripeDeliveries(deployment.tenant_id, STRIPE_SECRET)
    env = {"BILLING_SMTP_URL": smtp_sink.url}
    laps = Laps()
    async with cluster(deployment, replicas=2, workers=2, **env) as running:
        laps("start")
        clients = [admin_client(deployment, server, timeout=60) for server in running.replicas]
        try:
            await set_up(clients[0], receiver)
            laps("set-up")
            runs = await mixed_load(clients, ingestion, stripe)
            laps("mixed load")
            await ledger.settle(deployment)
            laps("workers catch up")
            # Time travel to the end of this month: both replicas close and bill it at once.
            at = next_month + timedelta(seconds=1)
            travelled = await simultaneous_runs(clients, {"at": stamp(at)})
            left_by_runs = await ledger.outstanding(deployment, at)
            laps("time travel")
        finally:
            for client in clients:
                await client.aclose()
        running.assert_all_running()
        assert running.tracebacks() == []
    laps("stop")
    print(
        f"\nscale-out: {ingestion.posts} batch posts, Stripe answers {dict(stripe.answers)}, "
        f"{len(runs) + len(travelled)} billing runs; {laps}"
    )
    assert not any(left_by_runs.values()), f"work the billing runs left due at their time: {left_by_runs}"
    await assert_each_event_counted_once(deployment, ingestion, batches)
    await assert_one_invoice_per_period_with_gapless_numbers(deployment, batches)
    await assert_one_charge_per_payment_attempt(deployment)
    await assert_each_email_sent_once(deployment, smtp_sink)
    await assert_each_stripe_event_handled_once(deployment)
    await assert_each_webhook_delivered(deployment, receiver)


async def assert_each_event_counted_once(
    deployment: Deployment, ingestion: Ingestion, batches: list[list[dict[str, Any]]]
) -> None:
    posted = {event["id"] for batch in batches for event in batch}
    assert ingestion.acknowledged == posted
    assert set(ingestion.accepted) == posted, "some events were never answered accepted"
    twice = {event_id: n for event_id, n in ingestion.accepted.items() if n > 1}
    assert twice == {}, f"events answered accepted by more than one posting: {twice}"
    expected = expected_usage(batches)
    counts = Counter(event["customer"] for batch in batches for event in batch)
    want = {customer: (total, counts[customer]) for customer, total in expected.items()}
    assert await ledger.usage_by_customer(deployment, month_start(0)) == want
    assert await ledger.rollups_by_customer(deployment, month_start(0)) == want


async def assert_one_invoice_per_period_with_gapless_numbers(
    deployment: Deployment, batches: list[list[dict[str, Any]]]
) -> None:
    invoices = await ledger.invoices(deployment)
    per_period = Counter((row.subscription_id, row.period_start) for row in invoices)
    assert set(per_period.values()) == {1}
    assert len(invoices) == 2 * CUSTOMERS, "one invoice per customer for last month and this month"
    # Declined ones end uncollectible once dunning has run its course (the month of time travel).
    assert {row.status for row in invoices} <= {"open", "paid", "uncollectible"}, "every invoice finalized"
    numbers = sorted(int(row.number.rsplit("-", 1)[1]) for row in invoices)
    assert numbers == list(range(1, len(invoices) + 1)), "numbers are gapless from 1"
    last_month = {external_id(n): Decimal(n + 1) for n in range(CUSTOMERS)}
    assert await ledger.usage_quantities(deployment, month_start(-1)) == last_month
    assert await ledger.usage_quantities(deployment, month_start(0)) == expected_usage(batches)


async def assert_one_charge_per_payment_attempt(deployment: Deployment) -> None:
    invoices = {row.id: row for row in await ledger.invoices(deployment)}
    payments = await ledger.payments(deployment)
    assert Counter((p.invoice_id, p.attempt) for p in payments).most_common(1)[0][1] == 1
    provider_ids = [p.provider_payment_id for p in payments]
    assert len(set(provider_ids)) == len(payments), "each attempt its own charge at the provider"
    assert all(p.provider_payment_id == stripe_like_id("pi", p.idempotency_key) for p in payments)
    attempts: dict[str, list[int]] = {}
    for p in payments:
        attempts.setdefault(p.invoice_id, []).append(p.attempt)
    assert set(attempts) == set(invoices), "every finalized invoice was charged"
    for invoice_id, made in attempts.items():
        assert sorted(made) == list(range(1, len(made) + 1)), f"{invoice_id}: attempts {sorted(made)}"
        customer = int(invoices[invoice_id].external_id[1:])
        if payment_method(customer) != DECLINING:
            assert made == [1], f"{invoice_id} was paid on its first attempt, once"
            assert invoices[invoice_id].status == "paid"
    assert {p.status for p in payments} <= {"succeeded", "failed"}


async def assert_each_email_sent_once(deployment: Deployment, sink: SmtpSink) -> None:
    notifications = await ledger.notifications(deployment)
    assert notifications, "dunning and card notices queued emails"
    assert Counter(n.dedupe_key for n in notifications).most_common(1)[0][1] == 1
    assert {n.status for n in notifications} == {"sent"}
    received = Counter(str(message["Message-ID"]) for message in sink.messages)
    expected = {message_id(n.id, n.from_address) for n in notifications}
    assert set(received) == expected
    assert received.most_common(1)[0][1] == 1, f"emails received more than once: {received.most_common(3)}"
    kinds = Counter(n.kind for n in notifications)
    assert kinds["card_expiring"] == CUSTOMERS, kinds


async def assert_each_stripe_event_handled_once(deployment: Deployment) -> None:
    stored = await ledger.stripe_events(deployment)
    assert len(stored) == CUSTOMERS, "each event stored once, however often it was delivered"
    assert {(row.status, row.attempts) for row in stored} == {("processed", 1)}
    emitted = await ledger.outbox_rows(deployment, "customer.payment_method_expiring")
    per_consumer = Counter((row.consumer, row.payload["stripe_event_id"]) for row in emitted)
    assert set(per_consumer.values()) == {1}
    assert len({event for _, event in per_consumer}) == CUSTOMERS


async def assert_each_webhook_delivered(deployment: Deployment, receiver: WebhookReceiver) -> None:
    deliveries = await ledger.webhook_deliveries(deployment)
    assert deliveries
    assert {row.status for row in deliveries} == {"delivered"}
    received = Counter(r.webhook_id for r in receiver.received)
    assert all(r.verified for r in receiver.received)
    assert set(received) == {row.event_id for row in deliveries}
    duplicates = {webhook_id: n for webhook_id, n in received.items() if n > 1}
    print(
        f"webhooks: {len(deliveries)} deliveries, {len(receiver.received)} requests received, "
        f"{len(duplicates)} webhook-ids received more than once (at least once allows it)"
    )


pytestmark = pytest.mark.timeout(150)
