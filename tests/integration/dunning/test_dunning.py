"""Dunning end to end through ``POST /v1/billing/run`` with time travel, the sandbox provider and a
real SMTP server: the schedule, the final notice, exhaustion, recovery after a card update,
authentication required, card notices, and never the same email twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from billing.core import outbox
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.fakes.smtp_sink import SmtpSink, body, running_sink, use_smtp
from tests.integration.invoicing.test_invoice_lifecycle import call, run
from tests.integration.web.test_auth import assert_problem


@pytest.fixture
def sink(ctx: AppContext) -> Iterator[SmtpSink]:
    with running_sink() as smtp:
        use_smtp(ctx, smtp)
        yield smtp


async def billed(
    client: httpx.AsyncClient, tenant: TenantHandle, payment_method: str, *, customer: str = "jane"
) -> dict[str, Any]:
    """Jane on a 25.00 USD plan, her October invoice finalized and charged on 2 November."""
    await call(client, tenant, "/v1/plans", {"code": customer, "name": "Pro", "base_fee": 2500}, status=201)
    body_ = {
        "external_id": customer,
        "email": f"{customer}@example.com",
        "name": "Jane <Doe>",
        "timezone": "UTC",
        "default_payment_method": payment_method,
    }
    await call(client, tenant, "/v1/customers", body_, status=201)
    await subscribe(client, tenant, [customer], starts_at="2026-10-01T00:00:00Z", plan=customer)
    await run(client, tenant, "2026-11-02T00:00:00Z")
    (invoice,) = (await call(client, tenant, f"/v1/invoices?customer={customer}", method="GET"))["data"]
    return invoice


async def the_case(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, Any]:
    (case,) = (await call(client, tenant, "/v1/dunning/cases", method="GET", scope=Scope.FINANCE))["data"]
    return case


def kinds(sink: SmtpSink) -> list[str]:
    return [str(message["Subject"]).split(":")[0] for message in sink.messages]


async def test_soft_declines_follow_the_schedule_then_the_invoice_is_given_up(
    client: httpx.AsyncClient, tenant: TenantHandle, sink: SmtpSink
) -> None:
    invoice = await billed(client, tenant, "pm_card_chargeDeclinedInsufficientFunds")
    (first,) = sink.messages
    assert (
        first["To"] == "jane@example.com"
        and "$25.00" in first["Subject"]
        and invoice["number"] in first["Subject"]
    )
    assert "Jane &lt;Doe&gt;" in body(first, "html") and "<Doe>" not in body(first, "html")
    case = await the_case(client, tenant)
    assert (case["status"], case["next_action_at"], case["next_action"]) == (
        "active",
        "2026-11-05T00:00:00Z",
        "retry",
    )
    await run(client, tenant, "2026-11-04T23:59:59Z")
    assert len(sink.messages) == 1
    await run(client, tenant, "2026-11-05T00:00:00Z")
    assert len(sink.messages) == 2 and "failed" in str(sink.messages[1]["Subject"])
    await run(client, tenant, "2026-11-07T00:00:00Z")
    assert "Final notice" in str(sink.messages[2]["Subject"])
    for _ in range(2):  # the last retry, then the same run again: nothing more happens
        await run(client, tenant, "2026-11-09T00:00:00Z")
    assert len(sink.messages) == 3
    final = await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET")
    assert final["status"] == "uncollectible"
    assert [p["reason"] for p in final["payments"]] == ["finalized", "dunning 1", "dunning 2", "dunning 3"]
    assert all(p["status"] == "failed" for p in final["payments"])
    case = await the_case(client, tenant)
    assert (case["status"], case["failures"], case["retries"], case["next_action_at"]) == (
        "exhausted",
        4,
        3,
        None,
    )
    assert [n["kind"] for n in case["notifications"]] == ["payment_failed", "payment_failed", "final_notice"]
    customer = await call(client, tenant, "/v1/customers/jane", method="GET")
    assert (customer["payment_status"], customer["dunning"]) == ("delinquent", None)


async def test_a_hard_decline_waits_for_a_new_card_which_is_charged_at_once_and_recovers(
    client: httpx.AsyncClient, tenant: TenantHandle, sink: SmtpSink, clock: FrozenClock
) -> None:
    invoice = await billed(client, tenant, "pm_card_chargeDeclinedExpiredCard")
    assert (await call(client, tenant, "/v1/customers/jane", method="GET"))[
        "payment_status"
    ] == "action_required"
    await run(client, tenant, "2026-11-05T00:00:00Z")  # the slot passes: the same card is not retried
    assert len((await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET"))["payments"]) == 1
    clock.set(datetime(2026, 11, 6, tzinfo=UTC))
    await call(
        client, tenant, "/v1/customers/jane", {"default_payment_method": "pm_card_visa"}, method="PATCH"
    )
    await run(client, tenant, "2026-11-06T00:00:00Z")
    paid = await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET")
    assert paid["status"] == "paid" and [p["status"] for p in paid["payments"]] == ["failed", "succeeded"]
    assert [str(m["Subject"]).split(":")[1].split()[:3] for m in sink.messages] == [
        ["your", "payment", "of"],
        ["payment", "of", "$25.00"],
    ]
    assert "received" in str(sink.messages[1]["Subject"])
    case = await the_case(client, tenant)
    assert case["status"] == "recovered"
    assert (await call(client, tenant, "/v1/customers/jane", method="GET"))["payment_status"] == "ok"
    await run(client, tenant, "2026-11-20T00:00:00Z")
    assert len(sink.messages) == 2


async def test_authentication_required_sends_the_update_link(
    client: httpx.AsyncClient, tenant: TenantHandle, sink: SmtpSink
) -> None:
    link = "https://billing.acme.test/update-card"
    await call(client, tenant, "/v1/tenant", {"update_payment_method_url": link}, method="PATCH")
    await billed(client, tenant, "pm_card_authenticationRequired")
    (message,) = sink.messages
    assert "confirm your payment" in str(message["Subject"])
    assert link in body(message) and link in body(message, "html")
    case = await the_case(client, tenant)
    assert (case["last_failure_class"], case["next_action"]) == ("action_required", "wait")


async def test_card_notices_are_sent_once_per_card_and_month_and_follow_the_policy(
    client: httpx.AsyncClient, tenant: TenantHandle, sink: SmtpSink, ctx: AppContext
) -> None:
    customer = await call(
        client, tenant, "/v1/customers", {"external_id": "jane", "email": "jane@example.com"}, status=201
    )
    card = {"id": "card_1", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}
    for _ in range(2):
        async with ctx.database.transaction() as session:
            for topic in ("customer.payment_method_expiring", "customer.payment_method_removed"):
                payload = {"customer_id": customer["id"], "card": card, "stripe_event_id": "evt_1"}
                await outbox.emit(
                    session, tenant_id=tenant.id, topic=topic, payload=payload, now=ctx.clock.now()
                )
        await run(client, tenant, "2026-11-21T12:00:00Z")
    assert len(sink.messages) == 2
    assert all("4242" in str(message["Subject"]) or "4242" in body(message) for message in sink.messages)
    policy = {
        "retry_schedule_days": [2, 4],
        "final_action": "leave_open",
        "suspend_customer": False,
        "expiring_card_notice": False,
    }
    await call(client, tenant, "/v1/dunning/policy", policy, method="PUT")
    async with ctx.database.transaction() as session:
        payload = {"customer_id": customer["id"], "card": card | {"id": "card_2"}, "stripe_event_id": "evt_2"}
        await outbox.emit(
            session,
            tenant_id=tenant.id,
            topic="customer.payment_method_expiring",
            payload=payload,
            now=ctx.clock.now(),
        )
    await run(client, tenant, "2026-11-21T12:00:00Z")
    assert len(sink.messages) == 2


async def test_the_policy_is_validated_and_a_changed_policy_applies_to_new_cases(
    client: httpx.AsyncClient, tenant: TenantHandle, sink: SmtpSink
) -> None:
    default = await call(client, tenant, "/v1/dunning/policy", method="GET", scope=Scope.FINANCE)
    assert (default["retry_schedule_days"], default["final_action"]) == ([3, 5, 7], "mark_uncollectible")
    bad = {
        "retry_schedule_days": [5, 3],
        "final_action": "leave_open",
        "suspend_customer": True,
        "expiring_card_notice": True,
    }
    assert_problem(
        await client.put("/v1/dunning/policy", headers=tenant.headers(), json=bad), 422, "validation_error"
    )
    unknown = bad | {"retry_schedule_days": [1], "final_action": "explode"}
    assert_problem(
        await client.put("/v1/dunning/policy", headers=tenant.headers(), json=unknown),
        422,
        "validation_error",
    )
    finance = await client.put("/v1/dunning/policy", headers=tenant.headers(Scope.FINANCE), json=bad)
    assert_problem(finance, 403, "forbidden")
    one_retry = bad | {"retry_schedule_days": [2], "suspend_customer": False}
    await call(client, tenant, "/v1/dunning/policy", one_retry, method="PUT")
    invoice = await billed(client, tenant, "pm_card_chargeDeclined")
    assert ["Final notice" in str(m["Subject"]) for m in sink.messages] == [True]  # the only retry is next
    await run(client, tenant, "2026-11-04T00:00:00Z")
    assert (await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET"))["status"] == "open"
    case = await the_case(client, tenant)
    assert case["status"] == "exhausted" and len(sink.messages) == 1
    assert (await call(client, tenant, "/v1/customers/jane", method="GET"))["payment_status"] == "ok"


async def test_the_card_scan_warns_about_cards_on_file_once_per_card_and_month(
    client: httpx.AsyncClient, tenant: TenantHandle, sink: SmtpSink, ctx: AppContext
) -> None:
    def card(card_id: str, year: int, month: int) -> dict[str, Any]:
        return {"id": card_id, "brand": "mastercard", "last4": "4444", "exp_month": month, "exp_year": year}

    for name, on_file in [
        ("now", card("pm_now", 2026, 11)),
        ("next", card("pm_next", 2026, 12)),
        ("later", card("pm_later", 2027, 3)),
    ]:
        body_ = {"external_id": name, "email": f"{name}@example.com", "card": on_file}
        created = await call(client, tenant, "/v1/customers", body_, status=201)
        assert created["card"] == on_file
    bad = {"external_id": "bad", "card": card("pm_bad", 2026, 13)}
    assert_problem(
        await client.post("/v1/customers", headers=tenant.headers(), json=bad), 422, "validation_error"
    )
    # The Stripe path reported one of them already: the scan does not repeat it.
    async with ctx.database.transaction() as session:
        customer_id = (await call(client, tenant, "/v1/customers/next", method="GET"))["id"]
        payload = {"customer_id": customer_id, "card": card("pm_next", 2026, 12), "stripe_event_id": "evt_9"}
        await outbox.emit(
            session,
            tenant_id=tenant.id,
            topic="customer.payment_method_expiring",
            payload=payload,
            now=ctx.clock.now(),
        )
    for _ in range(2):
        await run(client, tenant, "2026-11-21T12:00:00Z")
    assert sorted(str(m["To"]) for m in sink.messages) == ["next@example.com", "now@example.com"]
    await call(client, tenant, "/v1/customers/later", {"card": None}, method="PATCH")
    assert (await call(client, tenant, "/v1/customers/later", method="GET"))["card"] is None
