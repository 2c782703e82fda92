"""Outgoing webhooks end to end: domain events -> deliveries -> signed requests to a local receiver
that verifies them with the Standard Webhooks library; retries, timeouts, backoff under time travel,
disabling, the delivery log, manual retries, at-least-once after a crash, and two dispatchers."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from billing import jobs
from billing.core import outbox
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.core.settings import Settings
from billing.web.auth import Scope
from billing.webhooks import consumer, dispatcher
from billing.webhooks.backoff import RETRY_WINDOW
from billing.webhooks.events import ENDPOINT_DISABLED
from billing.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import FROZEN_AT, TenantHandle, listening
from tests.fakes.webhook_receiver import Answer, WebhookReceiver, running_receiver
from tests.integration.invoicing.test_invoice_lifecycle import call, run
from tests.integration.payments.test_payments import open_invoice
from tests.integration.web.test_auth import assert_problem

CARD = {"id": "card_1", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def disabled_notices() -> Iterator[list[Message]]:
    """What the notifications work will turn into an email to the tenant's support address."""
    with listening({ENDPOINT_DISABLED}) as seen:
        yield seen


async def endpoint_for(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    receiver: WebhookReceiver,
    events: list[str],
    *,
    url: str | None = None,
) -> dict[str, Any]:
    body = {"url": url or receiver.url, "events": events}
    endpoint = await call(client, tenant, "/v1/webhook-endpoints", body, status=201)
    receiver.secrets.append(endpoint["secret"])
    return endpoint


async def new_customer(
    client: httpx.AsyncClient, tenant: TenantHandle, external_id: str = "c1"
) -> dict[str, Any]:
    return await call(client, tenant, "/v1/customers", {"external_id": external_id}, status=201)


async def emit(ctx: AppContext, tenant_id: str, topic: str, payload: dict[str, Any]) -> str:
    async with ctx.database.transaction() as session:
        return await outbox.emit(
            session, tenant_id=tenant_id, topic=topic, payload=payload, now=ctx.clock.now()
        )


async def card_event(ctx: AppContext, tenant_id: str, customer_id: str) -> str:
    payload = {"customer_id": customer_id, "card": CARD, "stripe_event_id": "evt_stripe"}
    return await emit(ctx, tenant_id, "customer.payment_method_expiring", payload)


async def deliver(ctx: AppContext, *, at: datetime | None = None) -> None:
    """What the scheduler does: the outbox queues deliveries, the dispatcher sends what is due."""
    await jobs.dispatch_outbox(ctx)
    await dispatcher.deliver_all(ctx, at=at)


async def deliveries(
    client: httpx.AsyncClient, tenant: TenantHandle, endpoint_id: str, **params: Any
) -> list[dict]:
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
        headers=tenant.headers(Scope.FINANCE),
        params=params,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def only_delivery(client: httpx.AsyncClient, tenant: TenantHandle, endpoint_id: str) -> dict[str, Any]:
    (delivery,) = await deliveries(client, tenant, endpoint_id)
    return delivery


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- what is sent -----------------------------------------------------------------------------------


async def test_invoice_events_are_signed_and_carry_the_invoice_as_the_api_returns_it(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    endpoint = await endpoint_for(client, tenant, receiver, ["invoice.finalized", "invoice.paid"])
    invoice = await open_invoice(client, tenant, "pm_card_visa")
    await deliver(ctx)

    received = receiver.received
    assert len(received) == 2 and all(r.verified for r in received), [r.verify_error for r in received]
    by_type = {r.json()["type"]: r for r in received}
    assert set(by_type) == {"invoice.finalized", "invoice.paid"}
    api_invoice = await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET")
    for request in received:
        body = request.json()
        assert list(body) == ["id", "type", "created_at", "data"]
        assert body["id"].startswith("evt_") and request.webhook_id == body["id"]
        assert body["created_at"] == "2026-11-02T00:00:00Z"  # when the invoice changed, in the billing run
        if body["type"] == "invoice.paid":
            assert body["data"] == api_invoice
        else:  # the invoice as it was when it was finalized, before the charge in the same run paid it
            assert body["data"] == api_invoice | {
                "status": "open",
                "amount_paid": 0,
                "amount_due": api_invoice["total"],
                "paid_at": None,
                "status_transitions": api_invoice["status_transitions"][:2],
                "payments": [],
            }
            assert [t["status"] for t in body["data"]["status_transitions"]] == ["draft", "open"]
        assert request.path == "/hooks" and request.headers["content-type"] == "application/json"
    log = await deliveries(client, tenant, endpoint["id"])
    assert {d["type"] for d in log} == {"invoice.finalized", "invoice.paid"}
    for delivery in log:
        assert delivery["id"].startswith("whd_") and delivery["endpoint"] == endpoint["id"]
        assert delivery["status"] == "delivered" and delivery["attempt_count"] == 1
        # The billing run delivered them, at its own time.
        assert delivery["delivered_at"] == "2026-11-02T00:00:00Z" and delivery["next_attempt_at"] is None
        (attempt,) = delivery["attempts"]
        assert attempt["status_code"] == 200 and attempt["succeeded"] is True and attempt["error"] is None
        assert attempt["number"] == 1 and attempt["duration_ms"] >= 0
        assert delivery["event_id"] == by_type[delivery["type"]].webhook_id


async def test_a_failed_payment_names_the_attempt(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    await endpoint_for(client, tenant, receiver, ["invoice.payment_failed"])
    invoice = await open_invoice(client, tenant, "pm_card_chargeDeclined")
    await deliver(ctx)
    (request,) = receiver.received
    body = request.json()
    assert request.verified and body["type"] == "invoice.payment_failed"
    assert body["data"]["id"] == invoice["id"] and body["data"]["status"] == "open"
    assert body["related"] == {"payment": invoice["payments"][0]["id"]}
    assert body["data"]["payments"][0]["failure_code"] == "card_declined"


async def test_card_and_dunning_events_carry_the_customer_or_the_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_chargeDeclined")
    await jobs.dispatch_outbox(ctx)  # the invoice's own events, before any endpoint exists: not sent
    events = [
        "customer.payment_method_expiring",
        "customer.suspended",
        "dunning.exhausted",
        "dunning.recovered",
    ]
    await endpoint_for(client, tenant, receiver, events)
    customer_id = invoice["customer"]
    await card_event(ctx, tenant.id, customer_id)
    case = {"customer_id": customer_id, "invoice_id": invoice["id"], "case_id": "dun_1"}
    await emit(ctx, tenant.id, "customer.suspended", case)
    await emit(ctx, tenant.id, "dunning.exhausted", case)
    await deliver(ctx)

    bodies = {r.json()["type"]: r.json() for r in receiver.received if r.verified}
    assert set(bodies) == {"customer.payment_method_expiring", "customer.suspended", "dunning.exhausted"}
    api_customer = await call(client, tenant, f"/v1/customers/{customer_id}", method="GET")
    api_invoice = await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET")
    assert bodies["customer.payment_method_expiring"]["data"] == api_customer
    assert bodies["customer.payment_method_expiring"]["related"] == {"card": CARD}
    assert bodies["customer.suspended"]["data"] == api_customer
    assert bodies["customer.suspended"]["related"] == {"invoice": invoice["id"], "dunning_case": "dun_1"}
    assert bodies["dunning.exhausted"]["data"] == api_invoice
    assert bodies["dunning.exhausted"]["related"] == {"customer": customer_id, "dunning_case": "dun_1"}


async def test_only_enabled_subscribed_endpoints_of_the_tenant_receive_an_event(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    receiver: WebhookReceiver,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
) -> None:
    customer = await new_customer(client, tenant)
    wanted = await endpoint_for(
        client, tenant, receiver, ["customer.payment_method_expiring"], url=receiver.url + "?a"
    )
    everything = await endpoint_for(client, tenant, receiver, ["*"], url=receiver.url + "?all")
    await endpoint_for(client, tenant, receiver, ["invoice.voided"], url=receiver.url + "?voided")
    off = await endpoint_for(client, tenant, receiver, ["*"], url=receiver.url + "?off")
    await call(client, tenant, f"/v1/webhook-endpoints/{off['id']}", {"enabled": False}, method="PATCH")
    other = await make_tenant(name="Other")
    await endpoint_for(client, other, receiver, ["*"], url=receiver.url + "?other")

    event_id = await card_event(ctx, tenant.id, customer["id"])
    await card_event(ctx, tenant.id, "cus_missing")  # about nothing we know: no delivery, no error
    await deliver(ctx)

    assert sorted(r.path for r in receiver.received) == ["/hooks?a", "/hooks?all"]
    assert {r.webhook_id for r in receiver.received} == {event_id}  # one message id for every endpoint
    assert [d["event_id"] for d in await deliveries(client, tenant, wanted["id"])] == [event_id]
    assert [d["event_id"] for d in await deliveries(client, tenant, everything["id"])] == [event_id]
    assert await deliveries(client, tenant, off["id"]) == []


async def test_an_event_handed_over_twice_is_queued_once(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    customer = await new_customer(client, tenant)
    await endpoint_for(client, tenant, receiver, ["customer.payment_method_removed"])
    payload = {"customer_id": customer["id"], "card": CARD, "stripe_event_id": "evt_x"}
    message = Message("evt_twice", tenant.id, "customer.payment_method_removed", payload, ctx.clock.now(), 1)
    async with ctx.database.transaction() as session:
        assert await consumer.queue_deliveries(session, message) == 1
    async with ctx.database.transaction() as session:
        assert await consumer.queue_deliveries(session, message) == 0
    await deliver(ctx)
    assert [r.webhook_id for r in receiver.received] == ["evt_twice"]


# --- retries ----------------------------------------------------------------------------------------


async def test_a_500_is_retried_with_the_same_id_and_body_until_a_200(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    clock: FrozenClock,
    receiver: WebhookReceiver,
) -> None:
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    labels = {"endpoint": endpoint["id"], "type": "customer.payment_method_expiring"}
    receiver.answer(500)
    await card_event(ctx, tenant.id, customer["id"])
    await deliver(ctx)

    failed = await only_delivery(client, tenant, endpoint["id"])
    assert failed["status"] == "pending" and failed["attempt_count"] == 1
    assert failed["last_status_code"] == 500 and failed["last_error"] == "HTTP 500"
    assert failed["attempts"][0] | {"duration_ms": 0} == {
        "number": 1,
        "attempted_at": "2026-11-21T12:00:00Z",
        "succeeded": False,
        "status_code": 500,
        "duration_ms": 0,
        "error": "HTTP 500",
    }
    retry_at = at(failed["next_attempt_at"])
    assert FROZEN_AT + timedelta(seconds=8) <= retry_at <= FROZEN_AT + timedelta(seconds=10)
    async with ctx.database.read() as session:
        assert (await session.get_one(WebhookEndpoint, endpoint["id"])).failing_since == FROZEN_AT
    assert metric("billing_webhook_attempts_total", **labels, outcome="failure") == 1

    clock.set(retry_at - timedelta(seconds=1))
    await deliver(ctx)
    assert len(receiver.received) == 1  # not due yet
    clock.set(retry_at)
    await deliver(ctx)

    first, second = receiver.received
    assert first.verified and second.verified and (first.answered, second.answered) == (500, 200)
    assert first.webhook_id == second.webhook_id and first.body == second.body
    done = await only_delivery(client, tenant, endpoint["id"])
    assert done["status"] == "delivered" and done["delivered_at"] == failed["next_attempt_at"]
    assert [(a["number"], a["status_code"], a["succeeded"]) for a in done["attempts"]] == [
        (1, 500, False),
        (2, 200, True),
    ]
    assert done["last_error"] is None and done["last_status_code"] == 200
    async with ctx.database.read() as session:
        assert (await session.get_one(WebhookEndpoint, endpoint["id"])).failing_since is None
    assert metric("billing_webhook_attempts_total", **labels, outcome="success") == 1
    assert metric("billing_webhook_deliveries_total", **labels, status="delivered") == 1
    assert await deliveries(client, tenant, endpoint["id"], status="failed") == []
    assert [d["id"] for d in await deliveries(client, tenant, endpoint["id"], status="delivered")] == [
        done["id"]
    ]


async def test_a_slow_endpoint_times_out_and_is_tried_again(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    clock: FrozenClock,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert dispatcher.TIMEOUT_SECONDS == 10
    monkeypatch.setattr(dispatcher, "TIMEOUT_SECONDS", 0.3)
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    receiver.answer(Answer(200, delay=3))
    await card_event(ctx, tenant.id, customer["id"])
    await deliver(ctx)

    slow = await only_delivery(client, tenant, endpoint["id"])
    (attempt,) = slow["attempts"]
    assert slow["status"] == "pending" and attempt["status_code"] is None
    assert attempt["error"] == "timed out after 0.3 s" and 300 <= attempt["duration_ms"] < 2000
    clock.set(at(slow["next_attempt_at"]))
    await deliver(ctx)
    assert (await only_delivery(client, tenant, endpoint["id"]))["status"] == "delivered"
    assert [r.webhook_id for r in receiver.received] == [slow["event_id"]] * 2


async def test_an_unreachable_endpoint_records_the_connection_error(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["*"], url="http://127.0.0.1:9/nothing-listens")
    await card_event(ctx, tenant.id, customer["id"])
    await deliver(ctx)
    delivery = await only_delivery(client, tenant, endpoint["id"])
    assert delivery["status"] == "pending" and delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("ConnectError")


async def test_in_production_a_loopback_destination_is_refused_when_sending(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["*"])  # saved outside production
    ctx.settings = dataclasses.replace(ctx.settings, env="production")
    await card_event(ctx, tenant.id, customer["id"])
    await deliver(ctx)
    assert receiver.received == []
    delivery = await only_delivery(client, tenant, endpoint["id"])
    assert delivery["last_error"] == "destination refused: 127.0.0.1 resolves to a non-public address"


async def test_backoff_under_time_travel_for_three_days_then_failed_and_the_endpoint_disabled(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    clock: FrozenClock,
    receiver: WebhookReceiver,
    disabled_notices: list[Message],
) -> None:
    receiver.default = Answer(503)
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    await card_event(ctx, tenant.id, customer["id"])
    when: datetime | None = None
    for _ in range(150):
        await deliver(ctx, at=when)
        delivery = await only_delivery(client, tenant, endpoint["id"])
        if delivery["status"] != "pending":
            break
        when = at(delivery["next_attempt_at"])
    times = [at(a["attempted_at"]) for a in delivery["attempts"]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]

    assert delivery["status"] == "failed" and delivery["failed_at"] == "2026-11-24T12:00:00Z"
    assert times[0] == FROZEN_AT and times[-1] == FROZEN_AT + RETRY_WINDOW
    assert len(times) == len(receiver.received) == delivery["attempt_count"]
    assert all(r.verified for r in receiver.received)
    assert (
        len({r.webhook_id for r in receiver.received}) == 1 and len({r.body for r in receiver.received}) == 1
    )
    for n, gap in enumerate(gaps[:9]):  # exponential from 10 s, shortened by up to a fifth
        assert 10 * 2**n * 0.8 <= gap <= 10 * 2**n
    assert all(0 < gap < 3600 for gap in gaps)
    assert 82 <= len(times) <= 101

    disabled = await call(client, tenant, f"/v1/webhook-endpoints/{endpoint['id']}", method="GET")
    assert disabled["enabled"] is False and disabled["disabled_at"] == "2026-11-24T12:00:00Z"
    assert disabled["disabled_reason"] == "every attempt failed since 2026-11-21T12:00:00Z"
    clock.set(FROZEN_AT + RETRY_WINDOW)  # the outbox hands events over by its clock, not by ``at``
    await jobs.dispatch_outbox(ctx)
    (notice,) = disabled_notices
    assert (notice.topic, notice.tenant_id) == (ENDPOINT_DISABLED, tenant.id)
    assert notice.payload == {"endpoint_id": endpoint["id"], "url": receiver.url}
    labels = {"endpoint": endpoint["id"], "type": "customer.payment_method_expiring"}
    assert metric("billing_webhook_deliveries_total", **labels, status="failed") == 1
    assert metric("billing_webhook_attempts_total", **labels, outcome="failure") == len(times)

    await card_event(ctx, tenant.id, customer["id"])  # a disabled endpoint is sent nothing
    await deliver(ctx, at=FROZEN_AT + timedelta(days=4))
    assert len(await deliveries(client, tenant, endpoint["id"])) == 1


async def test_a_manual_retry_sends_the_same_message_again_once(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    clock: FrozenClock,
    receiver: WebhookReceiver,
) -> None:
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    receiver.default = Answer(500)
    await card_event(ctx, tenant.id, customer["id"])
    await deliver(ctx)
    clock.set(FROZEN_AT + RETRY_WINDOW)
    await deliver(ctx)  # the last try of the window fails: given up, and the endpoint is disabled
    failed = await only_delivery(client, tenant, endpoint["id"])
    assert failed["status"] == "failed" and failed["attempt_count"] == 2
    retry = f"/v1/webhook-deliveries/{failed['id']}/retry"
    assert_problem(await client.post(retry, headers=tenant.headers(Scope.FINANCE)), 409, "endpoint_disabled")
    assert_problem(await client.post(retry, headers=tenant.headers(Scope.INGEST)), 403, "forbidden")

    await call(client, tenant, f"/v1/webhook-endpoints/{endpoint['id']}", {"enabled": True}, method="PATCH")
    receiver.answer(500)
    again = await call(client, tenant, retry, scope=Scope.FINANCE)
    assert again["status"] == "failed" and again["attempt_count"] == 3  # one attempt, no new window
    receiver.default = Answer(204)
    delivered = await call(client, tenant, retry, scope=Scope.FINANCE)
    assert delivered["status"] == "delivered" and delivered["attempt_count"] == 4
    assert delivered["attempts"][-1]["status_code"] == 204
    assert len({r.webhook_id for r in receiver.received}) == 1 and len(receiver.received) == 4
    fetched = await call(
        client, tenant, f"/v1/webhook-deliveries/{failed['id']}", method="GET", scope=Scope.FINANCE
    )
    assert fetched == delivered


# --- at least once, at most once per dispatcher --------------------------------------------------------


async def test_a_crash_between_sending_and_recording_sends_again_with_the_same_webhook_id(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    clock: FrozenClock,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    await card_event(ctx, tenant.id, customer["id"])
    record = dispatcher._record

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died before it could commit")

    monkeypatch.setattr(dispatcher, "_record", crash)
    await deliver(ctx)
    monkeypatch.setattr(dispatcher, "_record", record)
    assert len(receiver.received) == 1
    unrecorded = await only_delivery(client, tenant, endpoint["id"])
    assert unrecorded["status"] == "pending" and unrecorded["attempt_count"] == 0

    await deliver(ctx)
    assert len(receiver.received) == 1  # the dead dispatcher's lease still holds the delivery
    clock.advance(dispatcher.LEASE)
    await deliver(ctx)

    first, second = receiver.received
    assert first.verified and second.verified
    assert first.webhook_id == second.webhook_id and first.body == second.body
    delivered = await only_delivery(client, tenant, endpoint["id"])
    assert delivered["status"] == "delivered" and delivered["attempt_count"] == 1


async def drain(ctx: AppContext) -> int:
    """Claim and send batches until nothing is due; how many deliveries this dispatcher handled."""
    total = 0
    while handled := await dispatcher.deliver_due(ctx):
        total += handled
    return total


@pytest.mark.postgres_only
async def test_two_dispatchers_never_send_a_delivery_twice(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    settings: Settings,
    clock: FrozenClock,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One endpoint here: lift its in-flight cap, or one dispatcher holds all it allows and the rest idle.
    monkeypatch.setattr(dispatcher, "PER_ENDPOINT_CONCURRENCY", 60)
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    receiver.default = Answer(200, delay=0.01)
    events = [await card_event(ctx, tenant.id, customer["id"]) for _ in range(60)]
    await jobs.dispatch_outbox(ctx)
    other = AppContext.create(settings, clock=clock)  # another replica: its own engine and connections
    try:
        handled = await asyncio.gather(drain(ctx), drain(other), drain(other))
    finally:
        await other.close()
    assert sum(handled) == 60 and sum(1 for n in handled if n) >= 2  # they did share the work
    sent = Counter(r.webhook_id for r in receiver.received)
    assert set(sent) == set(events) and set(sent.values()) == {1}
    async with ctx.database.read() as session:
        rows = (await session.execute(sa.select(WebhookDelivery.status, WebhookDelivery.attempt_count))).all()
    assert Counter(rows) == Counter({("delivered", 1): 60})
    assert len(await deliveries(client, tenant, endpoint["id"], limit=100)) == 60


# --- secrets -----------------------------------------------------------------------------------------


async def test_after_a_rotation_both_secrets_verify_until_the_old_one_expires(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    clock: FrozenClock,
    receiver: WebhookReceiver,
) -> None:
    customer = await new_customer(client, tenant)
    endpoint = await endpoint_for(client, tenant, receiver, ["customer.payment_method_expiring"])
    rotated = await call(client, tenant, f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", {})
    for secrets in ([endpoint["secret"]], [rotated["secret"]]):
        receiver.secrets = secrets
        await card_event(ctx, tenant.id, customer["id"])
        await deliver(ctx)
        assert receiver.received[-1].verified
    clock.advance(timedelta(hours=24))
    receiver.secrets = [endpoint["secret"]]
    await card_event(ctx, tenant.id, customer["id"])
    await deliver(ctx)
    assert not receiver.received[-1].verified
    assert (
        receiver.verify(receiver.received[-1].body, receiver.received[-1].headers)
        == "No matching signature found"
    )
    assert len(receiver.received[-1].headers["webhook-signature"].split(" ")) == 1


# --- wiring into POST /v1/billing/run -------------------------------------------------------------------


async def test_the_billing_run_delivers_webhooks_due_by_at(
    client: httpx.AsyncClient, tenant: TenantHandle, receiver: WebhookReceiver
) -> None:
    endpoint = await endpoint_for(client, tenant, receiver, ["invoice.paid"])
    receiver.answer(500)
    await open_invoice(client, tenant, "pm_card_visa")  # runs billing at 2026-11-02
    assert [r.answered for r in receiver.received] == [500]
    retry_at = (await only_delivery(client, tenant, endpoint["id"]))["next_attempt_at"]
    await run(client, tenant, retry_at)
    assert [r.answered for r in receiver.received] == [500, 200]
