"""Credit notes through the API: amounts, their effect on open and paid invoices, refunds through
the sandbox provider, numbers, refusals that write nothing, concurrency and isolation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.web.auth import Scope
from billing.webhooks.models import WebhookDelivery
from tests.conftest import TenantHandle, listening
from tests.integration.invoicing.test_invoice_lifecycle import call, get_invoice, run
from tests.integration.web.test_auth import assert_problem

NOTES = "/v1/credit-notes"


async def customer(
    client: httpx.AsyncClient, tenant: TenantHandle, external_id: str, card: str | None
) -> None:
    body: dict[str, Any] = {
        "external_id": external_id,
        "email": f"{external_id}@example.com",
        "timezone": "UTC",
    }
    if card is not None:
        body["default_payment_method"] = card
    await call(client, tenant, "/v1/customers", body, status=201)


async def open_invoice(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    *amounts: int,
    external_id: str = "c1",
    card: str | None = None,
) -> dict[str, Any]:
    """A finalized standalone invoice of one item per amount, for a new customer."""
    await customer(client, tenant, external_id, card)
    items = [{"description": f"Item {n}", "amount": amount} for n, amount in enumerate(amounts, 1)]
    draft = await call(client, tenant, "/v1/invoices", {"customer": external_id, "items": items}, status=201)
    opened = await call(client, tenant, f"/v1/invoices/{draft['id']}/finalize")
    assert opened["status"] == "open", opened
    return dict(opened)


async def paid_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle, *amounts: int, external_id: str = "c1"
) -> dict:
    invoice = await open_invoice(client, tenant, *amounts, external_id=external_id, card="pm_card_visa")
    paid = await call(client, tenant, f"/v1/invoices/{invoice['id']}/pay")
    assert paid["status"] == "paid", paid
    return dict(paid)


async def issue(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    invoice_id: str,
    status: int = 201,
    scope: Scope = Scope.ADMIN,
    **body: Any,
) -> dict[str, Any]:
    body = {"reason": "other", "refund": "none", **body}
    return dict(
        await call(
            client, tenant, f"/v1/invoices/{invoice_id}/credit-notes", body, status=status, scope=scope
        )
    )


async def notes(client: httpx.AsyncClient, tenant: TenantHandle, **params: str) -> list[dict[str, Any]]:
    response = await client.get(NOTES, headers=tenant.headers(Scope.FINANCE), params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def emails(client: httpx.AsyncClient, tenant: TenantHandle, kind: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/notifications", headers=tenant.headers(), params={"kind": kind})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# Open invoices


async def test_notes_on_an_open_invoice_lower_what_is_due_and_the_last_one_settles_it(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await open_invoice(client, tenant, 12000, -2000, 450)
    assert (invoice["total"], invoice["amount_due"], invoice["credit_notes"]) == (10450, 10450, [])
    with listening({"credit_note.created", "invoice.paid"}) as seen:
        first = await issue(
            client, tenant, invoice["id"], amount=3000, reason="duplicate", memo="Billed twice"
        )
        assert {
            key: first[key] for key in ("invoice", "customer", "currency", "reason", "refund", "memo")
        } == {
            "invoice": invoice["id"],
            "customer": invoice["customer"],
            "currency": "USD",
            "reason": "duplicate",
            "refund": "none",
            "memo": "Billed twice",
        }
        assert first["id"].startswith("cn_") and first["number"] == "CN-ACME-000001"
        assert (first["status"], first["subtotal"], first["tax_total"], first["total"]) == (
            "issued",
            3000,
            0,
            3000,
        )
        assert (first["pre_payment_amount"], first["post_payment_amount"]) == (3000, 0)
        assert (first["refund_id"], first["credit_grant"]) == (None, None)
        assert [(x["invoice_line"], x["amount"], x["tax_amounts"]) for x in first["lines"]] == [
            (None, 3000, [])
        ]
        assert first["lines"][0]["description"] == f"Credit on invoice {invoice['number']}"
        lowered = await get_invoice(client, tenant, invoice["id"])
        assert (lowered["status"], lowered["amount_due"], lowered["credit_notes"]) == (
            "open",
            7450,
            [first["id"]],
        )

        assert (lowered["pre_payment_credit_notes_amount"], lowered["post_payment_credit_notes_amount"]) == (
            3000,
            0,
        )

        second = await issue(client, tenant, invoice["id"], amount=7450)
        assert second["number"] == "CN-ACME-000002"
        settled = await get_invoice(client, tenant, invoice["id"])
        assert (settled["status"], settled["amount_due"], settled["amount_paid"]) == ("paid", 0, 0)
        assert settled["paid_at"] is not None and settled["credit_notes"] == [first["id"], second["id"]]
        assert settled["pre_payment_credit_notes_amount"] == 10450
        assert settled["status_transitions"][-1]["actor"] == f"credit_note:{second['id']}"
        await run(client, tenant, "2026-11-21T12:00:00Z")
    created = [m.payload for m in seen if m.topic == "credit_note.created"]
    assert [payload["object"] for payload in created] == [first, second]
    (paid,) = [m.payload for m in seen if m.topic == "invoice.paid"]
    assert (paid["invoice_id"], paid["paid_by"], paid["credit_note_id"]) == (
        invoice["id"],
        "credit_note",
        second["id"],
    )
    assert {e["dedupe_key"] for e in await emails(client, tenant, "credit_note_issued")} == {
        f"credit_note_issued:{first['id']}",
        f"credit_note_issued:{second['id']}",
    }
    assert await emails(client, tenant, "refund_issued") == []
    # Everything is credited: even one more minor unit is too much.
    refused = await client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        headers=tenant.headers(),
        json={"amount": 1, "reason": "other", "refund": "none"},
    )
    assert_problem(refused, 422, "credit_note_exceeds_invoice")


async def test_a_note_that_settles_an_invoice_in_dunning_recovers_the_case_without_an_email(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await open_invoice(client, tenant, 2500, card="pm_card_chargeDeclined")
    await run(client, tenant, invoice["due_at"])
    failed = await get_invoice(client, tenant, invoice["id"])
    assert [p["status"] for p in failed["payments"]] == ["failed"]
    (case,) = (await call(client, tenant, "/v1/dunning/cases", method="GET"))["data"]
    assert case["status"] == "active" and len(await emails(client, tenant, "payment_failed")) == 1

    await issue(client, tenant, invoice["id"], amount=2500, reason="product_unsatisfactory")
    await run(client, tenant, "2026-11-21T13:00:00Z")
    (case,) = (await call(client, tenant, "/v1/dunning/cases", method="GET"))["data"]
    assert case["status"] == "recovered"
    assert (await get_invoice(client, tenant, invoice["id"]))["status"] == "paid"
    assert await emails(client, tenant, "payment_recovered") == []
    customer_ = await call(client, tenant, "/v1/customers/c1", method="GET")
    assert customer_["payment_status"] == "ok"
    # Nothing is charged again later.
    await run(client, tenant, "2026-12-21T13:00:00Z")
    assert len((await get_invoice(client, tenant, invoice["id"]))["payments"]) == 1


# Paid invoices


async def test_a_note_on_a_paid_invoice_refunds_through_the_provider_at_most_what_is_left(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await paid_invoice(client, tenant, 1000)
    note = await issue(client, tenant, invoice["id"], amount=400, refund="provider", reason="order_change")
    assert (note["pre_payment_amount"], note["post_payment_amount"], note["total"]) == (0, 400, 400)
    refunded = await get_invoice(client, tenant, invoice["id"])
    (refund,) = refunded["refunds"]
    assert note["refund_id"] == refund["id"] and refund["id"].startswith("rfd_")
    assert (refund["amount"], refund["status"]) == (400, "succeeded")
    assert (refunded["status"], refunded["amount_refunded"], refunded["amount_paid"]) == ("paid", 400, 1000)
    assert refunded["credit_notes"] == [note["id"]]
    assert (refunded["pre_payment_credit_notes_amount"], refunded["post_payment_credit_notes_amount"]) == (
        0,
        400,
    )
    (email,) = await emails(client, tenant, "refund_issued")
    assert "$4.00" in email["subject"] and invoice["number"] in email["subject"]

    # 300 more refunded outside credit notes: 300 is left to refund, 600 to credit.
    await call(client, tenant, f"/v1/invoices/{invoice['id']}/refund", {"amount": 300})
    too_much = await client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        headers=tenant.headers(),
        json={"amount": 400, "reason": "other", "refund": "provider"},
    )
    assert_problem(too_much, 422, "refund_exceeds_payments")
    assert len(await notes(client, tenant)) == 1
    assert len((await get_invoice(client, tenant, invoice["id"]))["refunds"]) == 2
    # Settled outside the service: no refund, no grant.
    outside = await issue(client, tenant, invoice["id"], amount=600, scope=Scope.FINANCE)
    assert (outside["number"], outside["refund_id"], outside["post_payment_amount"]) == (
        "CN-ACME-000002",
        None,
        600,
    )
    assert (await get_invoice(client, tenant, invoice["id"]))["amount_refunded"] == 700


async def test_a_finance_key_issues_notes_but_refunds_through_the_provider_only_with_an_admin_key(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await paid_invoice(client, tenant, 1000)
    body = {"amount": 100, "reason": "other", "refund": "provider"}
    path = f"/v1/invoices/{invoice['id']}/credit-notes"
    assert_problem(
        await client.post(path, headers=tenant.headers(Scope.FINANCE), json=body), 403, "forbidden"
    )
    assert_problem(await client.post(path, headers=tenant.headers(Scope.INGEST), json=body), 403, "forbidden")
    assert await notes(client, tenant) == []
    assert (await get_invoice(client, tenant, invoice["id"]))["refunds"] == []


async def test_a_note_refunded_to_the_credit_balance_grants_its_total(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await paid_invoice(client, tenant, 1000)
    response = await client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        headers=tenant.headers(),
        json={"amount": 300, "reason": "order_change", "refund": "credit_balance"},
    )
    assert response.status_code == 201, response.text
    note = response.json()
    assert note["total"] == 300 and note["refund_id"] is None
    grant = (await client.get(f"/v1/credit-grants/{note['credit_grant']}", headers=tenant.headers())).json()
    assert {
        key: grant[key] for key in ("category", "priority", "expires_at", "amount", "available", "status")
    } == {
        "category": "promotional",
        "priority": 0,
        "expires_at": None,
        "amount": 300,
        "available": 300,
        "status": "active",
    }
    assert grant["name"] == f"Credit note {note['number']}" and grant["customer"] == invoice["customer"]
    ledger = await client.get(f"/v1/customers/{invoice['customer']}/credit-ledger", headers=tenant.headers())
    [entry] = ledger.json()["data"]
    assert (entry["type"], entry["amount"], entry["credit_note"], entry["balance_after"]) == (
        "granted",
        300,
        note["id"],
        300,
    )
    after = await get_invoice(client, tenant, invoice["id"])
    assert (after["status"], after["post_payment_credit_notes_amount"], after["credit_notes"]) == (
        "paid",
        300,
        [note["id"]],
    )


# Refusals


async def test_every_refused_request_answers_its_code_and_writes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await open_invoice(client, tenant, 1000)
    path = f"/v1/invoices/{invoice['id']}/credit-notes"
    ok = {"reason": "other", "refund": "none"}
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({**ok}, 422, "validation_error"),
        ({**ok, "amount": 100, "lines": [{"invoice_line": "il_x", "amount": 1}]}, 422, "validation_error"),
        ({**ok, "amount": 0}, 422, "validation_error"),
        ({**ok, "amount": -5}, 422, "validation_error"),
        ({**ok, "lines": []}, 422, "validation_error"),
        ({**ok, "lines": [{"invoice_line": "il_x", "amount": 0}]}, 422, "validation_error"),
        ({**ok, "amount": 100, "reason": "because"}, 422, "validation_error"),
        ({**ok, "amount": 100, "refund": "cash"}, 422, "validation_error"),
        ({"amount": 100, "refund": "none"}, 422, "validation_error"),
        ({**ok, "amount": 100, "colour": "red"}, 422, "validation_error"),
        ({**ok, "amount": 100, "refund": "provider"}, 422, "refund_requires_paid_invoice"),
        ({**ok, "amount": 100, "refund": "credit_balance"}, 422, "refund_requires_paid_invoice"),
        ({**ok, "amount": 1001}, 422, "credit_note_exceeds_invoice"),
        ({**ok, "lines": [{"invoice_line": "il_nope", "amount": 1}]}, 404, "not_found"),
    ]
    for body, status, code in refusals:
        assert_problem(await client.post(path, headers=tenant.headers(), json=body), status, code)
    malformed = await client.post(
        path, headers={**tenant.headers(), "content-type": "application/json"}, content="{"
    )
    assert malformed.status_code == 400
    assert_problem(
        await client.post(
            "/v1/invoices/inv_nope/credit-notes", headers=tenant.headers(), json={**ok, "amount": 1}
        ),
        404,
        "not_found",
    )
    assert await notes(client, tenant) == []
    unchanged = await get_invoice(client, tenant, invoice["id"])
    assert (unchanged["amount_due"], unchanged["status"], unchanged["credit_notes"]) == (1000, "open", [])
    # The refusals took no number.
    assert (await issue(client, tenant, invoice["id"], amount=1000))["number"] == "CN-ACME-000001"


async def test_only_open_and_paid_invoices_take_credit_notes(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1", None)
    items = [{"description": "Work", "amount": 500}]
    draft = await call(client, tenant, "/v1/invoices", {"customer": "c1", "items": items}, status=201)
    body = {"amount": 100, "reason": "other", "refund": "none"}
    response = await client.post(
        f"/v1/invoices/{draft['id']}/credit-notes", headers=tenant.headers(), json=body
    )
    assert_problem(response, 409, "invalid_transition")
    await call(client, tenant, f"/v1/invoices/{draft['id']}/finalize")
    for action in ("mark-uncollectible", "void"):
        await customer(client, tenant, f"c-{action}", None)
        other = await call(
            client, tenant, "/v1/invoices", {"customer": f"c-{action}", "items": items}, status=201
        )
        await call(client, tenant, f"/v1/invoices/{other['id']}/finalize")
        await call(client, tenant, f"/v1/invoices/{other['id']}/{action}")
        response = await client.post(
            f"/v1/invoices/{other['id']}/credit-notes", headers=tenant.headers(), json=body
        )
        assert_problem(response, 409, "invalid_transition")
    assert await notes(client, tenant) == []


# Numbers, lists, concurrency and isolation


async def test_numbers_are_gapless_per_tenant_and_lists_filter_by_invoice_and_customer(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    other = await make_tenant("Globex")
    first = await open_invoice(client, tenant, 1000, external_id="c1")
    second = await open_invoice(client, tenant, 1000, external_id="c2")
    foreign = await open_invoice(client, other, 1000, external_id="c1")
    issued = [
        await issue(client, tenant, first["id"], amount=100),
        await issue(client, other, foreign["id"], amount=100),
        await issue(client, tenant, second["id"], amount=100),
        await issue(client, tenant, first["id"], amount=100),
        await issue(client, other, foreign["id"], amount=100),
    ]
    assert [note["number"] for note in issued] == [
        "CN-ACME-000001",
        "CN-GLOBEX-000001",
        "CN-ACME-000002",
        "CN-ACME-000003",
        "CN-GLOBEX-000002",
    ]
    mine = [issued[3]["id"], issued[2]["id"], issued[0]["id"]]
    assert [note["id"] for note in await notes(client, tenant)] == mine
    assert [note["id"] for note in await notes(client, tenant, invoice=first["id"])] == [mine[0], mine[2]]
    assert [note["id"] for note in await notes(client, tenant, customer="c2")] == [mine[1]]
    assert [note["id"] for note in await notes(client, tenant, customer=second["customer"])] == [mine[1]]
    page = await call(client, tenant, f"{NOTES}?limit=2", method="GET")
    assert ([note["id"] for note in page["data"]], page["has_more"]) == (mine[:2], True)
    rest = await call(client, tenant, f"{NOTES}?limit=2&starting_after={mine[1]}", method="GET")
    assert ([note["id"] for note in rest["data"]], rest["has_more"]) == (mine[2:], False)
    one = await call(client, tenant, f"{NOTES}/{mine[0]}", method="GET", scope=Scope.FINANCE)
    assert one == issued[3]


async def test_another_tenants_notes_and_invoices_answer_404(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    other = await make_tenant("Globex")
    invoice = await open_invoice(client, tenant, 1000)
    note = await issue(client, tenant, invoice["id"], amount=100)
    assert_problem(await client.get(f"{NOTES}/{note['id']}", headers=other.headers()), 404, "not_found")
    body = {"amount": 100, "reason": "other", "refund": "none"}
    response = await client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes", headers=other.headers(), json=body
    )
    assert_problem(response, 404, "not_found")
    assert await notes(client, other) == []
    assert await notes(client, other, invoice=invoice["id"]) == []
    assert_problem(
        await client.get(NOTES, headers=other.headers(), params={"customer": "c1"}), 404, "not_found"
    )
    assert (await get_invoice(client, tenant, invoice["id"]))["amount_due"] == 900


async def test_two_notes_at_once_that_together_exceed_the_invoice_one_is_refused(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await open_invoice(client, tenant, 1000)
    path = f"/v1/invoices/{invoice['id']}/credit-notes"
    body = {"amount": 600, "reason": "other", "refund": "none"}
    responses = await asyncio.gather(
        *(client.post(path, headers=tenant.headers(), json=body) for _ in range(2))
    )
    assert sorted(response.status_code for response in responses) == [201, 422]
    (refused,) = [response for response in responses if response.status_code == 422]
    assert_problem(refused, 422, "credit_note_exceeds_invoice")
    (note,) = await notes(client, tenant)
    assert note["number"] == "CN-ACME-000001"
    assert (await get_invoice(client, tenant, invoice["id"]))["amount_due"] == 400


async def test_an_endpoint_subscribed_to_credit_note_created_gets_the_note(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    endpoint = await call(
        client,
        tenant,
        "/v1/webhook-endpoints",
        {"url": "http://127.0.0.1:9/hooks", "events": ["credit_note.created"]},
        status=201,
    )
    invoice = await open_invoice(client, tenant, 1000)
    note = await issue(client, tenant, invoice["id"], amount=250)
    await run(client, tenant, "2026-11-21T12:00:00Z")
    deliveries = await call(
        client, tenant, f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", method="GET"
    )
    assert [d["type"] for d in deliveries["data"]] == ["credit_note.created"]
    async with ctx.database.read() as session:
        (body,) = await session.scalars(sa.select(WebhookDelivery.body))
    envelope = json.loads(body)
    assert (envelope["type"], envelope["data"]) == ("credit_note.created", note)
