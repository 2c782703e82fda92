"""Archiving a customer (DELETE /v1/customers/{id}): its subscriptions end now with a final invoice,
open invoices stay collectible, its events are rejected, nothing new is accepted for it, the
external_id stays taken, the list filters on it, and customer.archived is sent once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

from billing import jobs
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import FROZEN_AT, TenantHandle, listening, subscribe
from tests.fakes.webhook_receiver import WebhookReceiver, running_receiver
from tests.finance_browser import FinanceBrowser
from tests.integration.invoicing.test_invoice_lifecycle import PER_UNIT, call, listed, run, send, setup
from tests.integration.web.test_auth import assert_problem
from tests.integration.webhooks.test_webhook_deliveries import deliver, endpoint_for

NOW = "2026-11-21T12:00:00Z"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as running:
        yield running


async def archive(client: httpx.AsyncClient, tenant: TenantHandle, ref: str, *, status: int = 200) -> Any:
    return await call(client, tenant, f"/v1/customers/{ref}", method="DELETE", status=status)


async def customer(client: httpx.AsyncClient, tenant: TenantHandle, ref: str) -> Any:
    return await call(client, tenant, f"/v1/customers/{ref}", method="GET")


def prorated(amount: int, start: datetime, end: datetime, month: tuple[datetime, datetime]) -> int:
    share = Decimal(int((end - start).total_seconds())) / Decimal(int((month[1] - month[0]).total_seconds()))
    return int((Decimal(amount) * share).quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def test_archiving_cancels_the_subscription_now_with_a_final_invoice_of_the_usage_so_far(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    (sub,) = await setup(
        client, tenant, ["c1"], starts_at="2026-11-01T00:00:00Z", prices=PER_UNIT, base_fee=3000
    )
    await send(
        client, tenant, ("e1", "c1", "2026-11-05T10:00:00Z", "7"), ("e2", "c1", "2026-11-21T11:59:59Z", "5")
    )

    archived = await archive(client, tenant, "c1")

    assert archived["archived_at"] == NOW and archived["external_id"] == "c1"
    canceled = await call(client, tenant, f"/v1/subscriptions/{sub['id']}", method="GET")
    assert (canceled["status"], canceled["cancel_at"]) == ("canceled", NOW)
    await run(client, tenant, "2026-11-23T00:00:00Z")  # past the grace period: final
    (invoice,) = await listed(client, tenant, customer="c1")
    assert (invoice["status"], invoice["subscription"]) == ("open", sub["id"])
    assert (invoice["period_start"], invoice["period_end"]) == ("2026-11-01T00:00:00Z", NOW)
    november = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    base_fee = prorated(3000, november[0], FROZEN_AT, november)
    # 12 units at 1 USD (the unit amount is in the currency's major unit, 2 decimals).
    usage = int((Decimal(7 + 5) * Decimal("1") * 10**2).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert base_fee == 2050
    assert invoice["total"] == base_fee + usage
    amounts = {line["kind"]: line["amount"] for line in invoice["lines"]}
    assert amounts == {"base_fee": base_fee, "usage": usage}


async def test_archiving_deletes_pending_items_first_and_takes_no_new_item(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-11-01T00:00:00Z", prices=PER_UNIT, base_fee=3000)
    item = await call(
        client,
        tenant,
        "/v1/invoice-items",
        {"customer": "c1", "description": "Setup", "amount": 5000},
        status=201,
    )

    await archive(client, tenant, "c1")

    assert (await call(client, tenant, f"/v1/invoice-items/{item['id']}", method="GET"))[
        "status"
    ] == "deleted"
    (final,) = await listed(client, tenant, customer="c1", status="draft")
    assert final["billing_reason"] == "subscription_cancel"
    assert [line["kind"] for line in final["lines"]] == ["base_fee", "usage"]
    response = await client.post(
        "/v1/invoice-items",
        headers=tenant.headers(),
        json={"customer": "c1", "description": "x", "amount": 1},
    )
    assert_problem(response, 409, "customer_archived")


async def test_archiving_cancels_a_scheduled_subscription_too(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    (sub,) = await setup(client, tenant, ["c1"], starts_at="2026-12-01T00:00:00Z")

    await archive(client, tenant, "c1")

    canceled = await call(client, tenant, f"/v1/subscriptions/{sub['id']}", method="GET")
    assert canceled["status"] == "canceled" and canceled["cancel_at"] == "2026-12-01T00:00:00Z"
    await run(client, tenant, "2026-12-05T00:00:00Z")
    assert await listed(client, tenant, customer="c1") == []


async def test_archiving_again_answers_the_same_customer_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    with listening({"customer.archived"}) as archived_events:
        first = await archive(client, tenant, "c1")
        clock.advance(timedelta(hours=1))
        again = await archive(client, tenant, first["id"])
        await jobs.dispatch_outbox(ctx)

    assert again == first == await customer(client, tenant, "c1")
    assert first["archived_at"] == NOW
    (message,) = archived_events
    assert message.payload["object"] == first


async def test_events_of_an_archived_customer_are_rejected_beside_accepted_ones(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1", "c2"], starts_at="2026-11-01T00:00:00Z", prices=PER_UNIT)
    # c1 is resolved (and remembered by ingestion) before it is archived.
    await send(client, tenant, ("before", "c1", "2026-11-10T00:00:00Z", "1"))
    c1 = await archive(client, tenant, "c1")

    events = [
        {"id": "a1", "customer": "c1", "meter": "units", "timestamp": "2026-11-21T11:00:00Z"},
        {"id": "b1", "customer": "c2", "meter": "units", "timestamp": "2026-11-21T11:00:00Z"},
        {"id": "a2", "customer": c1["id"], "meter": "units", "timestamp": "2026-11-10T00:00:00Z"},
    ]
    result = await call(client, tenant, "/v1/events/batch", {"events": events}, scope=Scope.INGEST)

    assert (result["accepted"], result["rejected"]) == (1, 2)
    statuses = [(r["id"], r["status"], r.get("code")) for r in result["results"]]
    assert statuses == [
        ("a1", "rejected", "customer_archived"),
        ("b1", "accepted", None),
        ("a2", "rejected", "customer_archived"),
    ]
    response = await client.get("/v1/events/a1", headers=tenant.headers())
    assert_problem(response, 404, "not_found")


async def test_an_archived_customer_takes_no_new_subscription_and_no_change(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/plans", {"code": "basic", "base_fee": 100}, status=201)
    created = await call(client, tenant, "/v1/customers", {"external_id": "c1", "name": "Before"}, status=201)
    archived = await archive(client, tenant, "c1")

    body = {"customer": "c1", "plan": "basic", "starts_at": "2026-12-01T00:00:00Z"}
    response = await client.post("/v1/subscriptions", headers=tenant.headers(), json=body)
    assert_problem(response, 409, "customer_archived")
    response = await client.patch("/v1/customers/c1", headers=tenant.headers(), json={"name": "After"})
    assert_problem(response, 409, "customer_archived")
    response = await client.post("/v1/customers", headers=tenant.headers(), json={"external_id": "c1"})
    assert_problem(response, 409, "conflict")

    assert await customer(client, tenant, "c1") == archived
    assert archived == created | {"archived_at": NOW}
    listed_subscriptions = await call(client, tenant, "/v1/subscriptions", method="GET")
    assert listed_subscriptions["data"] == []


async def test_the_list_filters_on_archived_and_shows_both_without_the_filter(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    for external_id in ("active", "gone"):
        await call(client, tenant, "/v1/customers", {"external_id": external_id}, status=201)
    await archive(client, tenant, "gone")

    async def external_ids(**params: str) -> list[str]:
        response = await client.get("/v1/customers", headers=tenant.headers(), params=params)
        assert response.status_code == 200, response.text
        return [row["external_id"] for row in response.json()["data"]]

    assert await external_ids(archived="true") == ["gone"]
    assert await external_ids(archived="false") == ["active"]
    assert await external_ids() == ["gone", "active"]
    response = await client.get("/v1/customers", headers=tenant.headers(), params={"archived": "maybe"})
    assert_problem(response, 422, "validation_error")


async def test_customer_archived_is_delivered_once_with_the_customer(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, receiver: WebhookReceiver
) -> None:
    await endpoint_for(client, tenant, receiver, ["customer.archived"])
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)

    archived = await archive(client, tenant, "c1")
    await deliver(ctx)
    await archive(client, tenant, "c1")
    await deliver(ctx)

    (request,) = receiver.received
    body = request.json()
    assert request.verified and body["type"] == "customer.archived"
    assert body["data"] == archived == await customer(client, tenant, "c1")
    assert body["created_at"] == NOW


async def test_the_currency_changes_until_the_customer_has_a_subscription(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    changed = await call(client, tenant, "/v1/customers/c1", {"currency": "EUR"}, method="PATCH")
    assert changed["currency"] == "EUR"
    await call(client, tenant, "/v1/plans", {"code": "euro", "currency": "EUR", "base_fee": 100}, status=201)
    await subscribe(client, tenant, ["c1"], starts_at="2026-12-01T00:00:00Z", plan="euro")

    response = await client.patch(
        "/v1/customers/c1", headers=tenant.headers(), json={"currency": "USD", "name": "Renamed"}
    )
    assert_problem(response, 409, "currency_locked")
    unchanged = await customer(client, tenant, "c1")
    assert (unchanged["currency"], unchanged["name"]) == ("EUR", None)
    same = await call(
        client, tenant, "/v1/customers/c1", {"currency": "EUR", "name": "Renamed"}, method="PATCH"
    )
    assert (same["currency"], same["name"]) == ("EUR", "Renamed")


async def test_the_currency_is_locked_by_an_invoice_even_after_the_subscription_ended(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    (sub,) = await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    await call(client, tenant, f"/v1/subscriptions/{sub['id']}/cancel", {"at": None})
    await run(client, tenant, "2026-11-23T00:00:00Z")
    assert len(await listed(client, tenant, customer="c1")) == 2

    response = await client.patch("/v1/customers/c1", headers=tenant.headers(), json={"currency": "EUR"})

    assert_problem(response, 409, "currency_locked")


async def test_the_currency_is_locked_by_a_credit_grant(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    grant = {"name": "Welcome", "amount": 500, "currency": "USD", "category": "promotional"}
    await call(client, tenant, "/v1/customers/c1/credit-grants", grant, status=201)

    response = await client.patch("/v1/customers/c1", headers=tenant.headers(), json={"currency": "EUR"})

    assert_problem(response, 409, "currency_locked")
    assert (await customer(client, tenant, "c1"))["currency"] == "USD"


async def test_another_tenants_customer_answers_404_and_stays_active(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    other = await make_tenant(name="Other")
    theirs = await call(client, other, "/v1/customers", {"external_id": "theirs"}, status=201)

    for ref in (theirs["id"], "theirs"):
        response = await client.delete(f"/v1/customers/{ref}", headers=tenant.headers())
        assert_problem(response, 404, "not_found")

    assert (await customer(client, other, "theirs"))["archived_at"] is None


async def test_archiving_needs_the_admin_scope(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    for scope in (Scope.FINANCE, Scope.INGEST):
        response = await client.delete("/v1/customers/c1", headers=tenant.headers(scope))
        assert response.status_code == 403
    assert (await customer(client, tenant, "c1"))["archived_at"] is None


async def test_an_open_invoice_of_an_archived_customer_is_still_charged(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/plans", {"code": "flat", "base_fee": 1000}, status=201)
    body = {"external_id": "c1", "timezone": "UTC", "default_payment_method": "pm_card_visa"}
    await call(client, tenant, "/v1/customers", body, status=201)
    await subscribe(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", plan="flat")
    await run(client, tenant, "2026-11-01T00:00:00Z")  # October closes into a draft
    (october,) = await listed(client, tenant, customer="c1")
    opened = await call(client, tenant, f"/v1/invoices/{october['id']}/finalize", scope=Scope.FINANCE)
    assert (opened["status"], opened["amount_due"]) == ("open", 1000)

    await archive(client, tenant, "c1")
    await run(client, tenant, NOW)

    paid = await call(client, tenant, f"/v1/invoices/{october['id']}", method="GET")
    assert (paid["status"], paid["amount_paid"], paid["amount_due"]) == ("paid", 1000, 0)
    assert [p["status"] for p in paid["payments"]] == ["succeeded"]


async def test_the_finance_pages_show_an_archived_customer_as_archived(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    for external_id in ("active", "gone"):
        await call(client, tenant, "/v1/customers", {"external_id": external_id}, status=201)
    gone = await archive(client, tenant, "gone")
    browser = FinanceBrowser(client)
    assert (await browser.log_in(tenant.keys[Scope.FINANCE])).status_code == 303

    listing = (await browser.get("/finance/customers")).text
    detail = (await browser.get(f"/finance/customers/{gone['id']}")).text
    active = (await browser.get("/finance/customers/active")).text

    assert listing.count('class="badge archived"') == 1
    assert 'class="badge archived"' in detail and "Archived" in detail
    assert "archived" not in active


@pytest.mark.postgres_only
async def test_concurrent_archives_and_subscriptions_leave_nothing_running(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await call(client, tenant, "/v1/plans", {"code": "basic", "base_fee": 100}, status=201)
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    body = {"customer": "c1", "plan": "basic", "starts_at": "2026-12-01T00:00:00Z"}

    with listening({"customer.archived"}) as archived_events:
        responses = await asyncio.gather(
            *(client.delete("/v1/customers/c1", headers=tenant.headers()) for _ in range(5)),
            *(client.post("/v1/subscriptions", headers=tenant.headers(), json=body) for _ in range(5)),
        )
        await jobs.dispatch_outbox(ctx)

    archives, creates = responses[:5], responses[5:]
    assert {r.status_code for r in archives} == {200}
    assert len({r.json()["archived_at"] for r in archives}) == 1
    assert len(archived_events) == 1
    assert all(r.status_code in (201, 409) for r in creates), [r.text for r in creates]
    subscriptions = (await call(client, tenant, "/v1/subscriptions", method="GET"))["data"]
    assert all(sub["status"] == "canceled" for sub in subscriptions)
