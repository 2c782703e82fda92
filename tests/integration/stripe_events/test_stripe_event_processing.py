"""Processing stored Stripe events: the handlers, retries and failure, reprocessing, the list, claims."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing import jobs
from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.core.scheduler import run_tick
from billing.customers.models import Customer
from billing.invoicing.models import Invoice
from billing.payments.attempts import open_attempt
from billing.payments.models import Payment
from billing.stripe_events import handlers
from billing.stripe_events.process import (
    LEASE,
    MAX_ATTEMPTS,
    claim_due,
    process_due,
    process_row,
    retry_delay,
)
from billing.tenants.models import Tenant
from billing.web.auth import Scope
from tests import stripe_payloads as sp
from tests.conftest import TenantHandle, listening
from tests.integration.payments.test_payments import open_invoice
from tests.integration.stripe_events.test_stripe_webhooks import SECRET, send, set_secrets, stored
from tests.integration.web.test_auth import assert_problem

EXPIRING = "customer.source.expiring"
DELETED = "customer.source.deleted"
CARD_TOPICS = {handlers.TOPIC_EXPIRING, handlers.TOPIC_REMOVED, handlers.TOPIC_UPDATED}


@contextmanager
def recorded_topics(*extra: str) -> Iterator[list[Message]]:
    """What the handlers hand to dunning and outgoing webhooks through the outbox, in order."""
    with listening(CARD_TOPICS | set(extra)) as seen:
        yield seen


@pytest.fixture
def topics() -> Iterator[list[Message]]:
    with recorded_topics("invoice.payment_failed") as seen:
        yield seen


async def customer(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    *,
    external_id: str = "c1",
    provider_customer_id: str | None = "cus_Stripe42",
    default_payment_method: str | None = None,
) -> dict[str, Any]:
    body = {"external_id": external_id, "email": f"{external_id}@example.com"}
    if provider_customer_id:
        body["provider_customer_id"] = provider_customer_id
    if default_payment_method:
        body["default_payment_method"] = default_payment_method
    response = await client.post("/v1/customers", headers=tenant.headers(), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def receive(client: httpx.AsyncClient, tenant: TenantHandle, evt: dict[str, Any]) -> None:
    response = await send(client, tenant.id, evt)
    assert response.json() == {"status": "received"}, response.text


async def process_and_dispatch(ctx: AppContext) -> None:
    while await process_due(ctx):
        pass
    await jobs.dispatch_outbox(ctx)


async def status_of(client: httpx.AsyncClient, tenant: TenantHandle, stripe_event_id: str) -> dict[str, Any]:
    response = await client.get("/v1/stripe-events", headers=tenant.headers(), params={"limit": 100})
    assert response.status_code == 200, response.text
    (found,) = [e for e in response.json()["data"] if e["stripe_event_id"] == stripe_event_id]
    return dict(found)


async def payment_status(client: httpx.AsyncClient, tenant: TenantHandle, ref: str = "c1") -> str:
    response = await client.get(f"/v1/customers/{ref}", headers=tenant.headers())
    return str(response.json()["payment_status"])


@pytest.fixture
async def stripe_tenant(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    await set_secrets(client, tenant, [SECRET], stripe_payment_method_events=True)
    return tenant


# --- customer.source.expiring -------------------------------------------------------------------


async def test_an_expiring_card_of_a_known_customer_is_handed_to_dunning(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    known = await customer(client, stripe_tenant)
    card = sp.card("cus_Stripe42", brand="mastercard", last4="4444", exp_month=12, exp_year=2026)
    evt = sp.event(EXPIRING, card)
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    (message,) = topics
    assert message.topic == "customer.payment_method_expiring"
    assert message.tenant_id == stripe_tenant.id
    snapshot = message.payload["object"]  # the customer as it was, for outgoing webhooks
    assert (snapshot["id"], snapshot["payment_status"]) == (known["id"], "ok")
    assert {key: value for key, value in message.payload.items() if key != "object"} == {
        "customer_id": known["id"],
        "card": {"id": card["id"], "brand": "Mastercard", "last4": "4444", "exp_month": 12, "exp_year": 2026},
        "stripe_event_id": evt["id"],
    }
    listed = await status_of(client, stripe_tenant, evt["id"])
    assert (listed["status"], listed["attempts"], listed["last_error"]) == ("processed", 1, None)
    assert listed["processed_at"] == "2026-11-21T12:00:00Z" and listed["next_attempt_at"] is None
    assert await payment_status(client, stripe_tenant) == "ok"


async def test_an_expiring_source_reports_its_nested_card(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    await customer(client, stripe_tenant)
    src = sp.source("cus_Stripe42", last4="0005", exp_month=1, exp_year=2027)
    await receive(client, stripe_tenant, sp.event(EXPIRING, src))
    await process_and_dispatch(ctx)
    (message,) = topics
    assert message.payload["card"] == {
        "id": src["id"],
        "brand": "visa",
        "last4": "0005",
        "exp_month": 1,
        "exp_year": 2027,
    }


@pytest.mark.parametrize(
    "obj",
    [
        sp.card("cus_NobodyWeKnow"),
        sp.card(None),
        sp.bank_account("cus_Stripe42"),
        sp.source("cus_Stripe42", type="ach_credit_transfer"),
    ],
    ids=["unknown Stripe customer", "card of no customer", "bank account", "source without a card"],
)
@pytest.mark.parametrize("type_", [EXPIRING, DELETED])
async def test_events_about_unknown_customers_or_no_card_are_skipped_without_error(
    client: httpx.AsyncClient,
    ctx: AppContext,
    stripe_tenant: TenantHandle,
    topics: list[Message],
    obj: dict[str, Any],
    type_: str,
) -> None:
    await customer(client, stripe_tenant, default_payment_method=obj["id"])
    evt = sp.event(type_, obj)
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    listed = await status_of(client, stripe_tenant, evt["id"])
    assert (listed["status"], listed["last_error"]) == ("skipped", None)
    assert topics == []
    assert await payment_status(client, stripe_tenant) == "ok"


async def test_another_tenants_customer_is_never_touched(
    client: httpx.AsyncClient,
    ctx: AppContext,
    stripe_tenant: TenantHandle,
    make_tenant: Any,
    topics: list[Message],
) -> None:
    other = await make_tenant("Other")
    card = sp.card("cus_Shared")
    await customer(client, other, provider_customer_id="cus_Shared", default_payment_method=card["id"])
    evt = sp.event(DELETED, card)
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "skipped"
    assert topics == []
    assert await payment_status(client, other) == "ok"


# --- customer.source.deleted and payment_method.* ----------------------------------------------------


async def test_deleting_the_default_card_asks_the_customer_for_action(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    card = sp.card("cus_Stripe42")
    known = await customer(client, stripe_tenant, default_payment_method=card["id"])
    evt = sp.event(DELETED, card)
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    assert await payment_status(client, stripe_tenant) == "action_required"
    (message,) = topics
    assert message.topic == "customer.payment_method_removed"
    assert message.payload["customer_id"] == known["id"] and message.payload["card"]["id"] == card["id"]
    assert message.payload["stripe_event_id"] == evt["id"]


async def test_deleting_another_card_only_tells_dunning(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    await customer(client, stripe_tenant, default_payment_method="pm_TheDefault")
    await receive(client, stripe_tenant, sp.event(DELETED, sp.card("cus_Stripe42")))
    await process_and_dispatch(ctx)
    assert await payment_status(client, stripe_tenant) == "ok"
    assert [m.topic for m in topics] == ["customer.payment_method_removed"]


async def test_a_delinquent_customer_stays_delinquent_when_the_card_goes(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    card = sp.card("cus_Stripe42")
    await customer(client, stripe_tenant, default_payment_method=card["id"])
    async with ctx.database.transaction() as session:
        await session.execute(sa.update(Customer).values(payment_status="delinquent"))
    await receive(client, stripe_tenant, sp.event(DELETED, card))
    await process_and_dispatch(ctx)
    assert await payment_status(client, stripe_tenant) == "delinquent"
    assert len(topics) == 1


@pytest.mark.parametrize("known_by", ["previous_attributes", "default_payment_method"])
async def test_a_detached_default_payment_method_asks_for_action(
    client: httpx.AsyncClient,
    ctx: AppContext,
    stripe_tenant: TenantHandle,
    topics: list[Message],
    known_by: str,
) -> None:
    method = sp.payment_method(None, last4="1881", brand="visa")
    await customer(client, stripe_tenant, default_payment_method=method["id"])
    previous = {"customer": "cus_Stripe42"} if known_by == "previous_attributes" else None
    await receive(
        client, stripe_tenant, sp.event("payment_method.detached", method, previous_attributes=previous)
    )
    await process_and_dispatch(ctx)
    assert await payment_status(client, stripe_tenant) == "action_required"
    (message,) = topics
    assert message.topic == "customer.payment_method_removed"
    assert message.payload["card"] == {
        "id": method["id"],
        "brand": "visa",
        "last4": "1881",
        "exp_month": 12,
        "exp_year": 2026,
    }


async def test_an_automatically_updated_card_is_only_announced(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    method = sp.payment_method("cus_Stripe42", exp_month=3, exp_year=2030)
    known = await customer(client, stripe_tenant, default_payment_method=method["id"])
    await receive(client, stripe_tenant, sp.event("payment_method.automatically_updated", method))
    await process_and_dispatch(ctx)
    (message,) = topics
    assert message.topic == "customer.payment_method_updated"
    assert message.payload["customer_id"] == known["id"]
    assert (message.payload["card"]["exp_month"], message.payload["card"]["exp_year"]) == (3, 2030)
    assert await payment_status(client, stripe_tenant) == "ok"


async def test_a_non_card_payment_method_is_skipped(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    method = sp.payment_method(None, type="sepa_debit")
    await customer(client, stripe_tenant, default_payment_method=method["id"])
    evt = sp.event("payment_method.detached", method, previous_attributes={"customer": "cus_Stripe42"})
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "skipped"
    assert topics == []


# --- payment_intent.payment_failed ------------------------------------------------------------------


async def _pending_retry(ctx: AppContext, invoice_id: str, provider_payment_id: str) -> str:
    """A second attempt whose charge call has not come back yet: the webhook may arrive first."""
    async with ctx.database.transaction() as session:
        invoice = await session.get_one(Invoice, invoice_id)
        tenant = await session.get_one(Tenant, invoice.tenant_id)
        owner = await session.get_one(Customer, invoice.customer_id)
        opened = await open_attempt(
            session,
            tenant,
            invoice,
            owner,
            attempt=2,
            reason="retry",
            at=ctx.clock.now(),
            lease=timedelta(minutes=5),
        )
        assert opened is not None
        payment, _token = opened
        payment.provider_payment_id = provider_payment_id
        return payment.id


async def _payment(ctx: AppContext, payment_id: str) -> Payment:
    async with ctx.database.read() as session:
        return await session.get_one(Payment, payment_id)


async def test_a_payment_failure_reported_first_by_stripe_is_recorded_once(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    invoice = await open_invoice(client, stripe_tenant, "pm_card_chargeDeclined")
    await process_and_dispatch(ctx)
    topics.clear()  # the first attempt's own failure, from the charge path
    payment_id = await _pending_retry(ctx, invoice["id"], "pi_3QwebhookFirst")
    metadata = {"tenant_id": stripe_tenant.id, "invoice_id": invoice["id"], "payment_id": payment_id}
    intent = sp.payment_intent(metadata=metadata, id="pi_3QwebhookFirst", decline_code="insufficient_funds")
    first = sp.event("payment_intent.payment_failed", intent)
    await receive(client, stripe_tenant, first)
    await process_and_dispatch(ctx)
    payment = await _payment(ctx, payment_id)
    assert (payment.status, payment.failure_code, payment.decline_code) == (
        "failed",
        "card_declined",
        "insufficient_funds",
    )
    assert [(m.topic, m.payload["source"]) for m in topics] == [("invoice.payment_failed", "webhook")]
    assert (await status_of(client, stripe_tenant, first["id"]))["status"] == "processed"
    # Stripe reports the same failure again under another event id: nothing more happens.
    again = sp.event("payment_intent.payment_failed", intent)
    await receive(client, stripe_tenant, again)
    await process_and_dispatch(ctx)
    assert (await status_of(client, stripe_tenant, again["id"]))["status"] == "processed"
    assert len(topics) == 1


async def test_a_failure_the_charge_path_recorded_first_is_not_recorded_again(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    invoice = await open_invoice(client, stripe_tenant, "pm_card_chargeDeclined")
    (payment,) = invoice["payments"]
    metadata = {"tenant_id": stripe_tenant.id, "invoice_id": invoice["id"], "payment_id": payment["id"]}
    intent = sp.payment_intent(
        metadata=metadata, id=payment["provider_payment_id"], decline_code="generic_decline"
    )
    evt = sp.event("payment_intent.payment_failed", intent)
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "processed"
    assert [(m.topic, m.payload["source"]) for m in topics] == [("invoice.payment_failed", "charge")]


async def test_a_failure_arriving_after_the_invoice_was_paid_is_skipped(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    invoice = await open_invoice(client, stripe_tenant, "pm_card_visa")
    assert invoice["status"] == "paid"
    (payment,) = invoice["payments"]
    metadata = {"tenant_id": stripe_tenant.id, "invoice_id": invoice["id"], "payment_id": payment["id"]}
    evt = sp.event(
        "payment_intent.payment_failed",
        sp.payment_intent(metadata=metadata, id=payment["provider_payment_id"]),
    )
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "skipped"
    assert topics == []  # no failure recorded, nothing for dunning
    assert (await _payment(ctx, payment["id"])).status == "succeeded"


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"invoice_id": "inv_x"},
        {"tenant_id": "self"},
        {"tenant_id": "ten_someoneelse", "invoice_id": "inv_x"},
    ],
    ids=["no metadata", "no tenant", "no invoice", "another tenant"],
)
async def test_payment_intents_we_did_not_create_are_skipped(
    client: httpx.AsyncClient,
    ctx: AppContext,
    stripe_tenant: TenantHandle,
    topics: list[Message],
    metadata: dict[str, str],
) -> None:
    metadata = {k: (stripe_tenant.id if v == "self" else v) for k, v in metadata.items()}
    evt = sp.event("payment_intent.payment_failed", sp.payment_intent(metadata=metadata))
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "skipped"
    assert topics == []


# --- retries, failure, reprocessing -------------------------------------------------------------------


async def test_a_failing_handler_is_retried_with_backoff_then_failed_then_reprocessed(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: Any,
    stripe_tenant: TenantHandle,
    topics: list[Message],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await customer(client, stripe_tenant)
    evt = sp.event(EXPIRING, sp.card("cus_Stripe42"))
    await receive(client, stripe_tenant, evt)

    async def broken(*args: Any) -> str:
        raise RuntimeError("dunning is down")

    monkeypatch.setitem(handlers.HANDLERS, EXPIRING, broken)
    assert await process_due(ctx) == 1
    listed = await status_of(client, stripe_tenant, evt["id"])
    assert (listed["status"], listed["attempts"]) == ("received", 1)
    assert listed["last_error"] == "RuntimeError: dunning is down"
    assert listed["next_attempt_at"] == "2026-11-21T12:00:30Z"
    assert await process_due(ctx) == 0  # not due before its backoff
    for attempt in range(2, MAX_ATTEMPTS + 1):
        clock.advance(retry_delay(attempt - 1))
        assert await process_due(ctx) == 1, attempt
    failed = await status_of(client, stripe_tenant, evt["id"])
    assert (failed["status"], failed["attempts"], failed["last_error"]) == (
        "failed",
        MAX_ATTEMPTS,
        "RuntimeError: dunning is down",
    )
    clock.advance(timedelta(days=1))
    assert await process_due(ctx) == 0
    response = await client.get(
        "/v1/stripe-events", headers=stripe_tenant.headers(), params={"status": "failed"}
    )
    assert [e["stripe_event_id"] for e in response.json()["data"]] == [evt["id"]]
    await jobs.dispatch_outbox(ctx)
    assert topics == []

    monkeypatch.undo()
    response = await client.post(
        f"/v1/stripe-events/{failed['id']}/reprocess", headers=stripe_tenant.headers(Scope.FINANCE)
    )
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["attempts"], response.json()["last_error"]) == (
        "processed",
        1,
        None,
    )
    await jobs.dispatch_outbox(ctx)
    assert [m.topic for m in topics] == ["customer.payment_method_expiring"]
    again = await client.post(f"/v1/stripe-events/{failed['id']}/reprocess", headers=stripe_tenant.headers())
    assert_problem(again, 409, "invalid_transition")


async def test_a_payload_no_retry_can_fix_fails_at_once(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    intent = sp.payment_intent(metadata={})
    intent["metadata"] = ["not", "a", "map"]
    evt = sp.event("payment_intent.payment_failed", intent)
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    listed = await status_of(client, stripe_tenant, evt["id"])
    assert (listed["status"], listed["attempts"]) == ("failed", 1)
    assert listed["last_error"].startswith("data.object is not a PaymentIntent")


async def test_a_skipped_event_can_be_reprocessed_once_the_customer_exists(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    evt = sp.event(EXPIRING, sp.card("cus_Stripe42"))
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    skipped = await status_of(client, stripe_tenant, evt["id"])
    assert skipped["status"] == "skipped"
    await customer(client, stripe_tenant)
    response = await client.post(
        f"/v1/stripe-events/{skipped['id']}/reprocess", headers=stripe_tenant.headers()
    )
    assert response.status_code == 200 and response.json()["status"] == "processed"
    await jobs.dispatch_outbox(ctx)
    assert len(topics) == 1


async def test_reprocess_is_for_finance_and_admin_of_the_same_tenant_only(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, make_tenant: Any
) -> None:
    evt = sp.event(EXPIRING, sp.card("cus_Nobody"))
    await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    event_id = (await status_of(client, stripe_tenant, evt["id"]))["id"]
    path = f"/v1/stripe-events/{event_id}/reprocess"
    assert_problem(await client.post(path, headers=stripe_tenant.headers(Scope.INGEST)), 403, "forbidden")
    other = await make_tenant("Other")
    assert_problem(await client.post(path, headers=other.headers()), 404, "not_found")
    assert_problem(
        await client.get(f"/v1/stripe-events/{event_id}", headers=other.headers()), 404, "not_found"
    )
    assert (await client.get("/v1/stripe-events", headers=other.headers())).json()["data"] == []
    assert_problem(await client.post(path), 401, "unauthorized")
    assert (await client.get(f"/v1/stripe-events/{event_id}", headers=stripe_tenant.headers())).json()[
        "status"
    ] == "skipped"


# --- claims: replicas, lost leases, order ------------------------------------------------------------


async def test_concurrent_processors_handle_each_event_once(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    await customer(client, stripe_tenant)
    for _ in range(12):
        await receive(client, stripe_tenant, sp.event(EXPIRING, sp.card("cus_Stripe42")))
    await asyncio.gather(*[process_due(ctx, limit=5) for _ in range(4)])
    await process_and_dispatch(ctx)
    assert len(topics) == 12
    assert len({m.payload["stripe_event_id"] for m in topics}) == 12
    assert {r.status for r in await stored(ctx)} == {"processed"}


async def test_a_processor_that_lost_its_lease_commits_nothing(
    client: httpx.AsyncClient, ctx: AppContext, clock: Any, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    await customer(client, stripe_tenant)
    await receive(client, stripe_tenant, sp.event(EXPIRING, sp.card("cus_Stripe42")))
    slow_token, (slow_row,) = await claim_due(ctx)
    clock.advance(LEASE + timedelta(seconds=1))
    assert await process_due(ctx) == 1  # another replica takes the expired lease and does the work
    await process_row(ctx, slow_row, slow_token)  # the first one wakes up: its effects roll back
    await jobs.dispatch_outbox(ctx)
    assert len(topics) == 1
    (row,) = await stored(ctx)
    assert (row.status, row.attempts) == ("processed", 1)


async def test_events_delivered_out_of_order_are_processed_in_stripe_order(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, topics: list[Message]
) -> None:
    card = sp.card("cus_Stripe42")
    await customer(client, stripe_tenant, default_payment_method=card["id"])
    later = sp.event(DELETED, card, created=sp.FROZEN_TS - 10)
    earlier = sp.event(EXPIRING, card, created=sp.FROZEN_TS - 100)
    await receive(client, stripe_tenant, later)
    await receive(client, stripe_tenant, earlier)
    await process_and_dispatch(ctx)
    assert [m.topic for m in topics] == [
        "customer.payment_method_expiring",
        "customer.payment_method_removed",
    ]
    assert await payment_status(client, stripe_tenant) == "action_required"


async def test_the_scheduler_runs_the_processing_tick(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    (processing,) = [t for t in jobs.ticks() if t.name == "stripe_events"]
    assert processing.every_seconds == 5
    await receive(client, stripe_tenant, sp.event(EXPIRING, sp.card("cus_Nobody")))
    assert await run_tick(ctx, processing) is True
    assert [r.status for r in await stored(ctx)] == ["skipped"]


# --- the list ------------------------------------------------------------------------------------------


async def test_the_list_pages_newest_first_and_filters_by_status_and_type(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    await customer(client, stripe_tenant)
    sent = [sp.event(EXPIRING, sp.card("cus_Stripe42")) for _ in range(3)]
    sent.append(sp.event(DELETED, sp.card("cus_Nobody")))
    for evt in sent:
        await receive(client, stripe_tenant, evt)
    await process_and_dispatch(ctx)
    headers = stripe_tenant.headers(Scope.FINANCE)
    first = (await client.get("/v1/stripe-events", headers=headers, params={"limit": 3})).json()
    assert first["has_more"] is True and len(first["data"]) == 3
    rest = (
        await client.get(
            "/v1/stripe-events", headers=headers, params={"starting_after": first["data"][-1]["id"]}
        )
    ).json()
    assert rest["has_more"] is False
    ids = [e["stripe_event_id"] for e in first["data"] + rest["data"]]
    assert ids == [evt["id"] for evt in reversed(sent)]
    item = first["data"][0]
    assert set(item) >= {
        "id",
        "stripe_event_id",
        "type",
        "status",
        "attempts",
        "last_error",
        "received_at",
        "processed_at",
    }
    assert item["received_at"] == "2026-11-21T12:00:00Z"
    skipped = (await client.get("/v1/stripe-events", headers=headers, params={"status": "skipped"})).json()
    assert [e["type"] for e in skipped["data"]] == [DELETED]
    by_type = (await client.get("/v1/stripe-events", headers=headers, params={"type": EXPIRING})).json()
    assert len(by_type["data"]) == 3
    bad = await client.get("/v1/stripe-events", headers=headers, params={"status": "lost"})
    assert bad.status_code in (400, 422)


# --- through to dunning --------------------------------------------------------------------------------


async def test_one_card_expiring_notice_per_card_and_month_however_often_stripe_reports_it(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    await customer(client, stripe_tenant)
    card = sp.card("cus_Stripe42", exp_month=12, exp_year=2026)
    for _ in range(2):  # two events about the same card and month, as Stripe may send
        await receive(client, stripe_tenant, sp.event(EXPIRING, card))
    await receive(client, stripe_tenant, sp.event(EXPIRING, {**card, "exp_year": 2027}))
    await process_and_dispatch(ctx)
    response = await client.get(
        "/v1/notifications",
        headers=stripe_tenant.headers(),
        params={"customer": "c1", "kind": "card_expiring"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2  # 2026-12 once, 2027-12 once


async def test_a_billing_run_processes_a_received_event_through_to_its_email(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    """With no scheduler and no worker, ``POST /v1/billing/run`` is all the work there is."""
    await customer(client, stripe_tenant)
    evt = sp.event(EXPIRING, sp.card("cus_Stripe42", exp_month=12, exp_year=2026))
    await receive(client, stripe_tenant, evt)
    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "received"

    response = await client.post("/v1/billing/run", headers=stripe_tenant.headers(), json={})
    assert response.status_code == 200, response.text

    assert (await status_of(client, stripe_tenant, evt["id"]))["status"] == "processed"
    response = await client.get(
        "/v1/notifications",
        headers=stripe_tenant.headers(),
        params={"customer": "c1", "kind": "card_expiring"},
    )
    (email,) = response.json()["data"]
    assert email["status"] == "sent", email
