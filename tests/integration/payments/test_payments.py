"""Charging through the sandbox provider: the first charge after finalization, decline classes,
``/pay``, refunds, the payments list, and the outbox events dunning consumes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from billing import jobs
from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.payments.failures import record_webhook_failure
from billing.web.auth import Scope
from tests.conftest import TenantHandle, listening, subscribe
from tests.integration.invoicing.test_invoice_lifecycle import call, run
from tests.integration.web.test_auth import assert_problem

FINALIZED_RUN = "2026-11-02T00:00:00Z"  # October closes on the 1st; a day of grace later it is charged


async def open_invoice(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    payment_method: str | None,
    *,
    customer: str = "c1",
    base_fee: int = 1000,
) -> dict[str, Any]:
    """A customer paying with ``payment_method`` on a flat plan, billed and charged for October."""
    plan = {"code": f"flat-{customer}", "name": "Flat", "base_fee": base_fee}
    await call(client, tenant, "/v1/plans", plan, status=201)
    body = {"external_id": customer, "timezone": "UTC", "email": f"{customer}@example.com"}
    if payment_method:
        body |= {"default_payment_method": payment_method, "provider_customer_id": f"cus_{customer}"}
    await call(client, tenant, "/v1/customers", body, status=201)
    await subscribe(client, tenant, [customer], starts_at="2026-10-01T00:00:00Z", plan=f"flat-{customer}")
    await run(client, tenant, FINALIZED_RUN)
    response = await client.get("/v1/invoices", headers=tenant.headers(), params={"customer": customer})
    (invoice,) = response.json()["data"]
    return invoice


@pytest.fixture
def topics() -> Iterator[list[Message]]:
    """The payment outcomes queued for consumers (dunning, webhooks), in order."""
    with listening({"invoice.paid", "invoice.payment_failed"}) as seen:
        yield seen


async def test_a_finalized_invoice_is_charged_once_and_paid(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, topics: list[Message]
) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_visa")
    assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("paid", 1000, 0)
    assert invoice["paid_at"] == "2026-11-02T00:00:00Z"
    (payment,) = invoice["payments"]
    assert payment["status"] == "succeeded" and payment["amount"] == 1000 and payment["attempt"] == 1
    assert payment["provider"] == "sandbox" and payment["reason"] == "finalized"
    assert payment["provider_payment_id"].startswith("pi_") and len(payment["provider_payment_id"]) == 27
    assert payment["failure_code"] is None
    again = await run(client, tenant, "2026-11-03T00:00:00Z")
    assert again["payments_attempted"] == 0
    assert len((await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET"))["payments"]) == 1
    await jobs.dispatch_outbox(ctx)
    assert [(m.topic, m.payload["invoice_id"]) for m in topics] == [("invoice.paid", invoice["id"])]


@pytest.mark.parametrize(
    ("method", "status", "failure_code", "decline_code", "failure_class"),
    [
        ("pm_card_chargeDeclined", "failed", "card_declined", "generic_decline", "soft"),
        ("pm_card_chargeDeclinedInsufficientFunds", "failed", "card_declined", "insufficient_funds", "soft"),
        ("pm_card_chargeDeclinedExpiredCard", "failed", "expired_card", "expired_card", "hard"),
        ("pm_card_chargeDeclinedStolenCard", "failed", "card_declined", "stolen_card", "hard"),
        (
            "pm_card_authenticationRequired",
            "requires_action",
            "authentication_required",
            "authentication_required",
            "action_required",
        ),
        (None, "failed", "payment_method_missing", None, "hard"),
    ],
)
async def test_a_failed_charge_is_recorded_with_its_class_and_handed_to_dunning(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    topics: list[Message],
    method: str | None,
    status: str,
    failure_code: str,
    decline_code: str | None,
    failure_class: str,
) -> None:
    invoice = await open_invoice(client, tenant, method)
    assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("open", 0, 1000)
    (payment,) = invoice["payments"]
    assert (payment["status"], payment["failure_code"], payment["decline_code"]) == (
        status,
        failure_code,
        decline_code,
    )
    assert payment["decline_type"] == (failure_class if failure_class != "action_required" else None)
    await jobs.dispatch_outbox(ctx)
    (message,) = topics
    assert message.topic == "invoice.payment_failed"
    assert message.payload["invoice_id"] == invoice["id"] and message.payload["source"] == "charge"
    assert message.payload["payment"]["failure_class"] == failure_class
    assert message.payload["payment"]["attempt"] == 1
    assert (await run(client, tenant, "2026-11-05T00:00:00Z"))["payments_attempted"] == 0


async def test_pay_charges_the_next_attempt_after_the_card_is_replaced(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, topics: list[Message]
) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_chargeDeclinedInsufficientFunds")
    again = await call(client, tenant, f"/v1/invoices/{invoice['id']}/pay", scope=Scope.FINANCE)
    assert [p["status"] for p in again["payments"]] == ["failed", "failed"]
    assert [p["attempt"] for p in again["payments"]] == [1, 2]
    assert again["payments"][1]["reason"] == "manual"
    assert again["payments"][0]["provider_payment_id"] != again["payments"][1]["provider_payment_id"]
    await call(client, tenant, "/v1/customers/c1", {"default_payment_method": "pm_card_visa"}, method="PATCH")
    paid = await call(client, tenant, f"/v1/invoices/{invoice['id']}/pay", scope=Scope.FINANCE)
    assert (paid["status"], paid["amount_paid"], paid["amount_due"]) == ("paid", 1000, 0)
    assert [p["status"] for p in paid["payments"]] == ["failed", "failed", "succeeded"]
    assert paid["payments"][2]["payment_method"] == "pm_card_visa"
    response = await client.post(f"/v1/invoices/{invoice['id']}/pay", headers=tenant.headers())
    assert_problem(response, 409, "invalid_transition")
    await jobs.dispatch_outbox(ctx)
    assert [m.topic for m in topics] == ["invoice.payment_failed"] * 2 + ["invoice.paid"]


async def test_pay_is_refused_for_drafts_voids_ingest_keys_and_other_tenants(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_chargeDeclined")
    path = f"/v1/invoices/{invoice['id']}/pay"
    assert_problem(await client.post(path, headers=tenant.headers(Scope.INGEST)), 403, "forbidden")
    other = await make_tenant("Other")
    assert_problem(await client.post(path, headers=other.headers()), 404, "not_found")
    await call(client, tenant, f"/v1/invoices/{invoice['id']}/void", scope=Scope.FINANCE)
    assert_problem(await client.post(path, headers=tenant.headers()), 409, "invalid_transition")
    await call(client, tenant, "/v1/billing/run", {"at": "2026-12-01T00:00:00Z"})
    (draft,) = (await call(client, tenant, "/v1/invoices?status=draft", method="GET"))["data"]
    response = await client.post(f"/v1/invoices/{draft['id']}/pay", headers=tenant.headers())
    assert_problem(response, 409, "invalid_transition")
    assert (await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET"))["payments"][0][
        "attempt"
    ] == 1


async def test_refunds_partial_then_the_rest_never_more_than_paid(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_visa", base_fee=1000)
    path = f"/v1/invoices/{invoice['id']}/refund"
    assert_problem(await client.post(path, headers=tenant.headers(Scope.FINANCE), json={}), 403, "forbidden")
    too_much = await client.post(path, headers=tenant.headers(), json={"amount": 1001})
    assert_problem(too_much, 422, "amount_too_large")
    assert_problem(
        await client.post(path, headers=tenant.headers(), json={"amount": 0}), 422, "validation_error"
    )
    partial = await call(client, tenant, path, {"amount": 300})
    (refund,) = partial["refunds"]
    assert (refund["amount"], refund["status"], refund["payment"]) == (
        300,
        "succeeded",
        invoice["payments"][0]["id"],
    )
    assert refund["provider_refund_id"].startswith("re_")
    assert (partial["amount_refunded"], partial["status"], partial["amount_paid"]) == (300, "paid", 1000)
    assert_problem(
        await client.post(path, headers=tenant.headers(), json={"amount": 701}), 422, "amount_too_large"
    )
    rest = await call(client, tenant, path, {"amount": None})
    assert [r["amount"] for r in rest["refunds"]] == [300, 700]
    assert rest["amount_refunded"] == 1000
    assert_problem(await client.post(path, headers=tenant.headers(), json={}), 409, "invalid_transition")


async def test_only_paid_invoices_can_be_refunded(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_chargeDeclined")
    response = await client.post(f"/v1/invoices/{invoice['id']}/refund", headers=tenant.headers(), json={})
    assert_problem(response, 409, "invalid_transition")
    assert (await call(client, tenant, f"/v1/invoices/{invoice['id']}", method="GET"))["refunds"] == []


async def test_the_payments_list_filters_and_stays_within_the_tenant(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    paid = await open_invoice(client, tenant, "pm_card_visa", customer="good")
    failed = await open_invoice(client, tenant, "pm_card_chargeDeclined", customer="bad")
    listed = await call(client, tenant, "/v1/payments", method="GET", scope=Scope.FINANCE)
    assert {p["invoice"] for p in listed["data"]} == {paid["id"], failed["id"]}
    by_status = await call(client, tenant, "/v1/payments?status=failed", method="GET")
    assert [p["invoice"] for p in by_status["data"]] == [failed["id"]]
    by_customer = await call(client, tenant, "/v1/payments?customer=good", method="GET")
    assert [p["invoice"] for p in by_customer["data"]] == [paid["id"]]
    assert (await call(client, tenant, "/v1/payments?flagged=true", method="GET"))["data"] == []
    payment_id = paid["payments"][0]["id"]
    assert (await call(client, tenant, f"/v1/payments/{payment_id}", method="GET"))["status"] == "succeeded"
    other = await make_tenant("Other")
    assert_problem(await client.get(f"/v1/payments/{payment_id}", headers=other.headers()), 404, "not_found")
    assert (await call(client, other, "/v1/payments", method="GET"))["data"] == []


async def test_a_webhook_failure_and_the_charge_path_record_one_failure_between_them(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, topics: list[Message]
) -> None:
    invoice = await open_invoice(client, tenant, "pm_card_chargeDeclined")
    (payment,) = invoice["payments"]
    report = {
        "tenant_id": tenant.id,
        "invoice_id": invoice["id"],
        "payment_id": payment["id"],
        "provider_payment_id": payment["provider_payment_id"],
        "failure_code": "card_declined",
        "decline_code": "generic_decline",
        "message": "declined",
        "at": ctx.clock.now(),
    }
    async with ctx.database.transaction() as session:
        assert await record_webhook_failure(session, **report) == "already_recorded"
        assert await record_webhook_failure(session, **report | {"invoice_id": "inv_other"}) == "skipped"
        assert await record_webhook_failure(session, **report | {"tenant_id": "ten_other"}) == "skipped"
    await jobs.dispatch_outbox(ctx)
    assert [m.topic for m in topics] == ["invoice.payment_failed"]
