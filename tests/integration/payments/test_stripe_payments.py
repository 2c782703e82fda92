"""The Stripe adapter through the real SDK against a Stripe-compatible server on 127.0.0.1:
parameters and idempotency keys on the wire, decline classes, timeouts, 500s and dropped
connections resolved by reconciliation, a process killed mid-charge, refunds. Each test counts
the charges the server made: never more than one success per invoice."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.settings import Settings
from billing.payments.models import Payment
from billing.payments.providers.stripe import API_VERSION
from billing.payments.reconcile import flag_stale
from billing.web.auth import Scope
from tests.conftest import TEST_SECRET_KEY, TenantHandle, subscribe
from tests.fakes.stripe_server import FakeStripe
from tests.integration.invoicing.test_invoice_lifecycle import call, run
from tests.integration.web.test_auth import assert_problem

SECRET_KEY = "sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc"
CHARGE_AT = "2026-11-02T00:00:00Z"


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[FakeStripe]:
    with FakeStripe(clock=clock) as server:
        yield server


@pytest.fixture
def settings(settings: Settings, fake: FakeStripe) -> Settings:
    return dataclasses.replace(
        settings, stripe_api_base=fake.url, stripe_timeout_seconds=0.5, stripe_max_network_retries=1
    )


@pytest.fixture
async def stripe_tenant(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    body = {"payment_provider": "stripe", "stripe_secret_key": SECRET_KEY}
    await call(client, tenant, "/v1/tenant", body, method="PATCH")
    return tenant


async def billed(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    payment_method: str,
    *,
    customer: str = "c1",
    at: str = CHARGE_AT,
) -> dict[str, Any]:
    """A customer on a 10.00 USD flat plan, invoiced for October by a billing run at ``at``."""
    await call(client, tenant, "/v1/plans", {"code": customer, "name": "Flat", "base_fee": 1000}, status=201)
    body = {
        "external_id": customer,
        "timezone": "UTC",
        "provider_customer_id": f"cus_{customer}",
        "default_payment_method": payment_method,
    }
    await call(client, tenant, "/v1/customers", body, status=201)
    await subscribe(client, tenant, [customer], starts_at="2026-10-01T00:00:00Z", plan=customer)
    await run(client, tenant, at)
    (invoice,) = (await call(client, tenant, f"/v1/invoices?customer={customer}", method="GET"))["data"]
    return invoice


async def invoice_of(client: httpx.AsyncClient, tenant: TenantHandle, invoice_id: str) -> dict[str, Any]:
    return await call(client, tenant, f"/v1/invoices/{invoice_id}", method="GET")


def intent_posts(fake: FakeStripe) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/v1/payment_intents"]


async def test_a_charge_is_one_payment_intent_with_the_contracts_parameters(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe
) -> None:
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", 1000)
    (intent,) = fake.charges(invoice_id=invoice["id"])
    assert intent["status"] == "succeeded" and intent["amount"] == 1000 and intent["currency"] == "usd"
    (payment,) = invoice["payments"]
    assert payment["provider_payment_id"] == intent["id"] and payment["provider"] == "stripe"
    (request,) = intent_posts(fake)
    assert request.form | {"metadata": None} == {
        "amount": "1000",
        "currency": "usd",
        "customer": "cus_c1",
        "payment_method": "pm_card_visa",
        "off_session": "true",
        "confirm": "true",
        "description": f"Invoice {invoice['number']}",
        "metadata": None,
    }
    assert request.form["metadata"] == {
        "invoice_id": invoice["id"],
        "tenant_id": stripe_tenant.id,
        "payment_id": payment["id"],
    }
    assert request.idempotency_key == f"{invoice['id']}:attempt:1"
    assert request.header("Authorization") == f"Bearer {SECRET_KEY}"
    assert request.header("Stripe-Version") == API_VERSION


@pytest.mark.parametrize(
    ("method", "status", "failure_code", "decline_code", "decline_type"),
    [
        ("pm_card_chargeDeclined", "failed", "card_declined", "generic_decline", "soft"),
        ("pm_card_chargeDeclinedInsufficientFunds", "failed", "card_declined", "insufficient_funds", "soft"),
        ("pm_card_chargeDeclinedExpiredCard", "failed", "expired_card", "expired_card", "hard"),
        ("pm_card_chargeDeclinedLostCard", "failed", "card_declined", "lost_card", "hard"),
        ("pm_card_chargeDeclinedProcessingError", "failed", "processing_error", None, "soft"),
        (
            "pm_card_authenticationRequired",
            "requires_action",
            "authentication_required",
            "authentication_required",
            None,
        ),
    ],
)
async def test_declines_are_recorded_with_stripes_codes_and_our_class(
    client: httpx.AsyncClient,
    stripe_tenant: TenantHandle,
    fake: FakeStripe,
    method: str,
    status: str,
    failure_code: str,
    decline_code: str | None,
    decline_type: str | None,
) -> None:
    invoice = await billed(client, stripe_tenant, method)
    (payment,) = invoice["payments"]
    assert (payment["status"], payment["failure_code"], payment["decline_type"]) == (
        status,
        failure_code,
        decline_type,
    )
    if decline_code is not None:
        assert payment["decline_code"] == decline_code
    (intent,) = fake.charges(invoice_id=invoice["id"])
    assert intent["status"] != "succeeded" and payment["provider_payment_id"] == intent["id"]
    assert invoice["status"] == "open" and invoice["amount_paid"] == 0


async def test_each_attempt_has_its_own_key_and_the_sdks_retries_repeat_it(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe
) -> None:
    invoice = await billed(client, stripe_tenant, "pm_card_chargeDeclined")
    await call(
        client, stripe_tenant, "/v1/customers/c1", {"default_payment_method": "pm_card_visa"}, method="PATCH"
    )
    fake.fail(500, when="before", path="/v1/payment_intents")  # the SDK retries it with the same key
    paid = await call(client, stripe_tenant, f"/v1/invoices/{invoice['id']}/pay", scope=Scope.FINANCE)
    assert paid["status"] == "paid"
    keys = [request.idempotency_key for request in intent_posts(fake)]
    first, second = f"{invoice['id']}:attempt:1", f"{invoice['id']}:attempt:2"
    assert keys == [first, second, second]
    assert len(fake.charges(invoice_id=invoice["id"], status="succeeded")) == 1
    assert len(fake.charges(invoice_id=invoice["id"])) == 2


async def test_a_timeout_leaves_the_payment_pending_until_reconciliation_learns_the_outcome(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe, ctx: AppContext
) -> None:
    fake.hang(1.5, when="after", times=2, path="/v1/payment_intents")  # the call and the SDK's retry
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    (payment,) = invoice["payments"]
    assert (payment["status"], invoice["status"]) == ("pending", "open")
    assert len(fake.charges(invoice_id=invoice["id"], status="succeeded")) == 1
    for action in ("pay", "void"):
        response = await client.post(
            f"/v1/invoices/{invoice['id']}/{action}", headers=stripe_tenant.headers()
        )
        assert_problem(response, 409, "payment_in_progress")
    note = {"amount": 100, "reason": "other", "refund": "none"}
    response = await client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes", headers=stripe_tenant.headers(), json=note
    )
    assert_problem(response, 409, "payment_in_progress")
    # While the caller's claim holds, nobody else asks; once it lapses, reconciliation repeats the call.
    assert (await run(client, stripe_tenant, "2026-11-02T00:00:30Z"))["payments_reconciled"] == 0
    result = await run(client, stripe_tenant, "2026-11-02T00:10:00Z")
    assert (result["payments_reconciled"], result["payments_attempted"]) == (1, 0)
    paid = await invoice_of(client, stripe_tenant, invoice["id"])
    assert (paid["status"], paid["amount_paid"], paid["payments"][0]["status"]) == ("paid", 1000, "succeeded")
    assert {r.idempotency_key for r in intent_posts(fake)} == {f"{invoice['id']}:attempt:1"}
    assert len(fake.charges(invoice_id=invoice["id"])) == 1


async def test_a_saved_500_is_resolved_by_looking_the_intent_up_once_the_key_may_be_gone(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe
) -> None:
    fake.fail(500, when="after", path="/v1/payment_intents")  # charged, then a 500 that replays forever
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    assert invoice["payments"][0]["status"] == "pending"
    await run(client, stripe_tenant, "2026-11-02T01:00:00Z")
    assert (await invoice_of(client, stripe_tenant, invoice["id"]))["payments"][0]["status"] == "pending"
    await run(client, stripe_tenant, "2026-11-03T01:00:00Z")  # past 23 hours: search by our payment id
    paid = await invoice_of(client, stripe_tenant, invoice["id"])
    assert (paid["status"], paid["payments"][0]["status"]) == ("paid", "succeeded")
    assert len(intent_posts(fake)) == 2 and len(fake.charges(invoice_id=invoice["id"])) == 1


async def test_a_charge_that_never_reached_stripe_fails_after_the_lookup_finds_nothing(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe
) -> None:
    fake.fail(500, when="before", times=2, path="/v1/payment_intents")
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    assert invoice["payments"][0]["status"] == "pending"
    await run(client, stripe_tenant, "2026-11-03T01:00:00Z")
    payment = (await invoice_of(client, stripe_tenant, invoice["id"]))["payments"][0]
    assert (payment["status"], payment["failure_code"], payment["decline_type"]) == (
        "failed",
        "charge_not_found",
        "soft",
    )
    assert fake.charges(invoice_id=invoice["id"]) == []


async def test_a_dropped_connection_after_the_charge_is_retried_with_the_same_key(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe
) -> None:
    fake.drop(when="after", path="/v1/payment_intents")
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    assert invoice["status"] == "paid"
    assert [r.replayed for r in intent_posts(fake)] == [False, True]
    assert len(fake.charges(invoice_id=invoice["id"])) == 1


async def test_a_payment_pending_for_a_day_is_flagged_for_finance(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe, ctx: AppContext
) -> None:
    fake.fail(503, when="before", times=100)  # Stripe unreachable for the whole time
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    await run(client, stripe_tenant, "2026-11-02T12:00:00Z")
    clock_at = (await invoice_of(client, stripe_tenant, invoice["id"]))["payments"][0]
    assert clock_at["status"] == "pending" and clock_at["flagged_at"] is None
    stale_at = ctx.clock.now().replace(year=2026, month=11, day=3, hour=1)
    assert await flag_stale(ctx, at=stale_at) == 1
    assert await flag_stale(ctx, at=stale_at) == 0
    flagged = await call(
        client, stripe_tenant, "/v1/payments?flagged=true", method="GET", scope=Scope.FINANCE
    )
    assert [p["id"] for p in flagged["data"]] == [clock_at["id"]]
    assert fake.charges(invoice_id=invoice["id"]) == []


async def test_refunds_go_through_stripe_with_a_key_per_refund(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle, fake: FakeStripe
) -> None:
    invoice = await billed(client, stripe_tenant, "pm_card_visa")
    (intent,) = fake.charges(invoice_id=invoice["id"])
    path = f"/v1/invoices/{invoice['id']}/refund"
    fake.hang(1.5, when="after", times=2, path="/v1/refunds")
    pending = await call(client, stripe_tenant, path, {"amount": 400})
    assert [r["status"] for r in pending["refunds"]] == ["pending"] and pending["amount_refunded"] == 0
    assert_problem(
        await client.post(path, headers=stripe_tenant.headers(), json={"amount": 601}),
        422,
        "amount_too_large",
    )
    await run(client, stripe_tenant, "2026-11-21T12:10:00Z")  # refunds are made at the clock's time
    rest = await call(client, stripe_tenant, path, {"amount": None})
    assert [(r["amount"], r["status"]) for r in rest["refunds"]] == [(400, "succeeded"), (600, "succeeded")]
    assert rest["amount_refunded"] == 1000
    refunds = fake.refunds(payment_intent=intent["id"])
    assert sorted(r["amount"] for r in refunds) == [400, 600]
    keys = [r.idempotency_key for r in fake.requests if r.path == "/v1/refunds"]
    assert len(set(keys)) == 2 and len(keys) == 4  # the first refund: twice, then once more on reconciliation
    assert len(fake.charges(invoice_id=invoice["id"])) == 1


async def _pending_in_database(ctx: AppContext, invoice_id: str) -> bool:
    async with ctx.database.read() as session:
        status = await session.scalar(sa.select(Payment.status).where(Payment.invoice_id == invoice_id))
    return status == "pending"


async def test_a_process_killed_between_the_charge_and_its_commit_is_reconciled_to_one_charge(
    client: httpx.AsyncClient,
    stripe_tenant: TenantHandle,
    fake: FakeStripe,
    ctx: AppContext,
    settings: Settings,
) -> None:
    invoice = await billed(client, stripe_tenant, "pm_card_visa", at="2026-11-01T06:00:00Z")
    assert invoice["status"] == "draft"
    await call(client, stripe_tenant, f"/v1/invoices/{invoice['id']}/finalize", scope=Scope.FINANCE)
    fake.hang(60, when="after", path="/v1/payment_intents")
    root = Path(__file__).parents[3]
    env = os.environ | {
        "PYTHONPATH": str(root),  # this checkout's code, whatever the virtualenv was installed from
        "BILLING_DATABASE_URL": settings.database_url,
        "BILLING_SECRET_KEY": TEST_SECRET_KEY,
        "BILLING_STRIPE_API_BASE": fake.url,
        "BILLING_STRIPE_TIMEOUT_SECONDS": "120",
        "BILLING_STRIPE_MAX_NETWORK_RETRIES": "0",
        "BILLING_DATA_DIR": str(settings.data_dir),
        "BILLING_ENV": "test",
        "BILLING_LOG_LEVEL": "warning",
    }
    script = Path(__file__).with_name("charge_then_hang.py")
    worker = await asyncio.create_subprocess_exec(
        # After the finalization (at the clock's time): the first charge is made at the due date.
        sys.executable,
        str(script),
        "2026-11-21T12:30:00+00:00",
        env=env,
        cwd=root,
    )
    try:
        for _ in range(300):
            if fake.charges(invoice_id=invoice["id"]) and await _pending_in_database(ctx, invoice["id"]):
                break
            assert worker.returncode is None, "the charging process ended before it was killed"
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the charge never reached the fake Stripe")
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert (await invoice_of(client, stripe_tenant, invoice["id"]))["payments"][0]["status"] == "pending"
    result = await run(client, stripe_tenant, "2026-11-21T12:40:00Z")
    assert result["payments_reconciled"] == 1
    paid = await invoice_of(client, stripe_tenant, invoice["id"])
    assert (paid["status"], [p["status"] for p in paid["payments"]]) == ("paid", ["succeeded"])
    assert [r.replayed for r in intent_posts(fake)] == [False, True]
    assert len(fake.charges(invoice_id=invoice["id"])) == 1
