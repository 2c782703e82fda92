"""Emails and outgoing webhooks under SIGKILL: every customer's charge is declined, so the billing
run queues a ``payment_failed`` email per customer and three webhooks per invoice (created,
finalized, payment_failed); the process doing it (``driver.py``, the work of ``POST
/v1/billing/run``) is killed while it sends them, then started again ten minutes later in
business time, when the claims of the killed process have lapsed.

Webhooks are at least once: each is received, and a repeat carries the same ``webhook-id`` and
body. Emails cannot be exactly once over SMTP: a kill between the server's acceptance of an email
and the commit of its ``sent`` status sends it again. ``billing/notifications/dispatch.py``
documents that window as at most one email per SMTP connection (``LANES``) per crash, the copy
bearing the same Message-ID; that is what is tested, beside every email arriving and each dedupe
key standing for one email.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billing.notifications.dispatch import LANES
from billing.notifications.models import Notification
from billing.webhooks.models import WebhookDelivery
from tests.crash import scene
from tests.crash.harness import (
    RESTART_AFTER,
    ROUNDS,
    Api,
    Condition,
    Deployment,
    Proc,
    kill_when,
    month_start,
    stamp,
)
from tests.fakes.smtp_sink import SmtpSink, running_sink
from tests.fakes.webhook_receiver import Answer, Received, WebhookReceiver, running_receiver

EMAIL_CUSTOMERS = 30
WEBHOOK_CUSTOMERS = 16
WEBHOOK_TYPES = {"invoice.created", "invoice.finalized", "invoice.payment_failed"}
SETTLE_SECONDS = 0.5


def whole(received: list[Received]) -> list[Received]:
    """The requests that arrived whole (a kill may cut one while its body is on the way)."""
    return [r for r in received if len(r.body) == int(r.headers.get("content-length", "-1"))]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with running_sink() as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as running:
        running.default = Answer(200, delay=0.01)  # received, not yet answered: a kill lands here too
        yield running


async def declined_customers(api: Api, count: int, *, email: bool) -> None:
    """``count`` customers whose card is declined, each with one invoice for last month."""
    await scene.plan(api, "flat", base_fee=1000)

    def fields(external_id: str) -> dict[str, str | None]:
        address = f"{external_id}@example.com" if email else None
        return {"email": address, "default_payment_method": "pm_card_chargeDeclined"}

    await scene.subscribed_customers(api, count, plan="flat", starts_at=month_start(-1), fields=fields)


@dataclass
class Work:
    """What the driver does that a kill can cut: rows the outbox consumers queue (``queued``, in
    the database) and what they send (``received``, by the fake); ``total`` of each."""

    queued: Callable[[], Awaitable[int]]
    received: Callable[[], int]
    total: int
    after_kill: Callable[[int], Awaitable[None]]  # given ``received()`` before the round


def kill_condition(rng: random.Random, work: Work, queued: int) -> Condition:
    """Mostly while sending (somewhere in the first two thirds of what is left), sometimes while
    the outbox is being turned into emails or deliveries, as long as some are left to queue."""
    if queued < work.total and rng.random() < 0.3:
        target = queued + rng.randint(1, max(1, (work.total - queued) * 2 // 3))
        print(f"kill at {target} queued")

        async def reached() -> bool:
            return await work.queued() >= target

        return reached
    start = work.received()
    target = start + rng.randint(1, max(1, (work.total - start) * 2 // 3))
    print(f"kill at {target} received")
    return lambda: work.received() >= target


async def run_with_kills(deployment: Deployment, rng: random.Random, work: Work, **env: str) -> int:
    """Run the driver ``ROUNDS`` times killed at a random point, then once to the end; return
    how many runs were killed (a run that finished before its kill point was not)."""
    at = month_start(0) + timedelta(hours=25)
    kills = 0
    for round_ in range(ROUNDS + 1):
        last, start = round_ == ROUNDS, work.received()
        condition = None if last else kill_condition(rng, work, await work.queued())
        args = ("-m", "tests.crash.driver", stamp(at + round_ * RESTART_AFTER), deployment.tenant_id)
        driver = await Proc.start(deployment, f"driver-{round_}", *args, **env)
        try:
            if condition is None:
                await driver.finish()
            elif await kill_when(driver, condition, rng, jitter=0.005, poll=0.005):
                kills += 1
                await work.after_kill(start)
        finally:
            await driver.kill()
    return kills


async def test_a_killed_dispatcher_sends_every_email_and_repeats_at_most_one_per_connection(
    deployment: Deployment, api: Api, sink: SmtpSink, rng: random.Random
) -> None:
    await declined_customers(api, EMAIL_CUSTOMERS, email=True)
    windows: list[int] = []

    async def the_window(start: int) -> None:
        """The emails the killed process handed to the sink without committing their ``sent``
        status; each will be sent again. At most one per SMTP connection."""
        await asyncio.sleep(SETTLE_SECONDS)  # the sink may still be handling the last DATA
        sent = await deployment.rows(sa.select(Notification.id).where(Notification.status == "sent"))
        window = {m["X-Billing-Notification-Id"] for m in sink.messages[start:]} - {r.id for r in sent}
        windows.append(len(window))
        assert len(window) <= LANES, window

    async def queued() -> int:
        return int(await deployment.scalar(sa.select(sa.func.count()).select_from(Notification)))

    work = Work(queued, lambda: len(sink.messages), EMAIL_CUSTOMERS, the_window)
    kills = await run_with_kills(deployment, rng, work, BILLING_SMTP_URL=sink.url)
    assert kills >= 1

    rows = await deployment.rows(sa.select(Notification.id, Notification.dedupe_key, Notification.status))
    assert len(rows) == EMAIL_CUSTOMERS
    assert {row.status for row in rows} == {"sent"}
    copies = defaultdict(list)
    for message in sink.messages:
        copies[message["X-Billing-Notification-Id"]].append(message)
    assert set(copies) == {row.id for row in rows}, "an email never arrived"
    for sent in copies.values():
        assert len({(m["Message-ID"], m.as_bytes()) for m in sent}) == 1, (
            "a repeat differs from the first copy"
        )
    dedupe_keys = {row.id: row.dedupe_key for row in rows}
    distinct = {m["Message-ID"]: m["X-Billing-Notification-Id"] for m in sink.messages}
    assert sorted(dedupe_keys[n] for n in distinct.values()) == sorted(dedupe_keys.values())
    repeats = len(sink.messages) - len(copies)
    print(f"{kills} kills; emails in the window of each: {windows} (at most {LANES}); {repeats} repeats")
    assert repeats == sum(windows), "an email was sent again that was not in a kill's window"


async def test_a_killed_dispatcher_delivers_every_webhook_at_least_once_with_the_same_id_and_body(
    deployment: Deployment, api: Api, receiver: WebhookReceiver, rng: random.Random
) -> None:
    endpoint = await api.create("/v1/webhook-endpoints", {"url": receiver.url, "events": ["*"]})
    receiver.secrets.append(endpoint["secret"])
    await declined_customers(api, WEBHOOK_CUSTOMERS, email=False)
    expected = len(WEBHOOK_TYPES) * WEBHOOK_CUSTOMERS
    windows: list[int] = []

    async def the_window(start: int) -> None:
        """The webhooks the killed process sent without committing their delivery: each is
        sent again."""
        await asyncio.sleep(SETTLE_SECONDS)  # the receiver may still be handling the last request
        done = sa.select(WebhookDelivery.event_id).where(WebhookDelivery.status == "delivered")
        delivered = {row.event_id for row in await deployment.rows(done)}
        windows.append(len({r.webhook_id for r in whole(receiver.received[start:])} - delivered))

    async def queued() -> int:
        return int(await deployment.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)))

    work = Work(queued, lambda: len(receiver.received), expected, the_window)
    kills = await run_with_kills(deployment, rng, work)
    assert kills >= 1

    deliveries = await deployment.rows(sa.select(WebhookDelivery.event_id, WebhookDelivery.status))
    assert {row.status for row in deliveries} == {"delivered"}
    received = whole(receiver.received)
    assert all(r.verified for r in received), [r.verify_error for r in received if not r.verified]
    bodies = defaultdict(set)
    for request in received:
        bodies[request.webhook_id].add(request.body)
    assert set(bodies) == {row.event_id for row in deliveries}, "a webhook never arrived"
    assert all(len(versions) == 1 for versions in bodies.values()), "a repeat differs from the first"
    types = defaultdict(set)
    for payload in (request.json() for request in received):
        if payload["type"].startswith("invoice."):
            types[payload["data"]["id"]].add(payload["type"])
    assert len(types) == WEBHOOK_CUSTOMERS
    assert all(seen >= WEBHOOK_TYPES for seen in types.values()), types
    repeats = len(received) - len(bodies)
    print(f"{kills} kills; webhooks in the window of each: {windows}; {repeats} repeats")
    assert repeats == sum(windows), "a webhook was sent again that was not in a kill's window"
