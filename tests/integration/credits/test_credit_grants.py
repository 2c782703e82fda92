"""Credit grants through the API: creation and every refusal, isolation, the balance in burn
order, the ledger, expiry at the instant, voiding, paid grants and their invoices, and
credit_balance.low once per crossing."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from billing import jobs
from billing.core.clock import FrozenClock, format_timestamp
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import FROZEN_AT, TenantHandle, listening
from tests.integration.credits.helpers import (
    CARD,
    DECLINED,
    assert_ledger_consistent,
    balance,
    credit_rows,
    customer,
    get_grant,
    grant,
    ledger,
    meter,
    set_low_threshold,
    void,
)
from tests.integration.invoicing.test_invoice_lifecycle import act, call, get_invoice, run
from tests.integration.web.test_auth import assert_problem

NOW = format_timestamp(FROZEN_AT)


def later(**delta: float) -> str:
    return format_timestamp(FROZEN_AT + timedelta(**delta))


async def test_a_promotional_grant_is_active_at_once_with_its_granted_entry(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1")
    await meter(client, tenant, "api_calls")
    with listening({"credit_grant.created", "credit_grant.activated"}) as seen:
        created = await grant(
            client,
            tenant,
            "c1",
            name="Welcome",
            amount=2500,
            currency="USD",
            priority=10,
            expires_at="2026-12-31T23:00:00+01:00",
            applies_to_meters=["api_calls"],
            metadata={"campaign": "q4"},
        )
        await jobs.dispatch_outbox(ctx)
    assert created["id"].startswith("crg_") and created["object"] == "credit_grant"
    expected = {
        "customer": created["customer"],
        "name": "Welcome",
        "amount": 2500,
        "currency": "USD",
        "category": "promotional",
        "priority": 10,
        "expires_at": "2026-12-31T22:00:00Z",
        "applies_to_meters": ["api_calls"],
        "available": 2500,
        "invoice": None,
        "status": "active",
        "effective_at": NOW,
        "voided_at": None,
        "created_at": NOW,
        "metadata": {"campaign": "q4"},
    }
    assert {key: created[key] for key in expected} == expected
    assert await get_grant(client, tenant, created["id"]) == created
    (entry,) = await ledger(client, tenant, "c1")
    assert entry["id"].startswith("cbt_")
    assert (entry["type"], entry["amount"], entry["balance_after"]) == ("granted", 2500, 2500)
    assert (entry["credit_grant"], entry["invoice"], entry["credit_note"]) == (created["id"], None, None)
    assert [(m.topic, m.payload["object"]["status"]) for m in seen] == [
        ("credit_grant.created", "pending"),
        ("credit_grant.activated", "active"),
    ]
    assert seen[1].payload["object"] == created
    shown = await balance(client, tenant, "c1")
    assert shown["customer"] == created["customer"]
    ((usd),) = shown["balances"]
    assert (usd["currency"], usd["available"], usd["pending"]) == ("USD", 2500, 0)
    assert usd["grants"] == [
        {
            "credit_grant": created["id"],
            "name": "Welcome",
            "category": "promotional",
            "priority": 10,
            "expires_at": "2026-12-31T22:00:00Z",
            "status": "active",
            "available": 2500,
        }
    ]


async def test_defaults_and_the_customer_by_external_id(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created_customer = await customer(client, tenant, "c1", currency="JPY")
    created = await grant(client, tenant, created_customer["id"], amount=500)
    assert (created["currency"], created["priority"], created["expires_at"]) == ("JPY", 50, None)
    assert (created["applies_to_meters"], created["metadata"]) == (None, {})
    assert (await balance(client, tenant, "c1"))["balances"][0]["available"] == 500


BAD_GRANTS = [
    ({"amount": 0}, 422, "validation_error"),
    ({"amount": -100}, 422, "validation_error"),
    ({"amount": 100, "currency": "EUR"}, 422, "currency_mismatch"),
    ({"amount": 100, "currency": "usd"}, 422, "validation_error"),
    ({"amount": 100, "priority": -1}, 422, "validation_error"),
    ({"amount": 100, "priority": 101}, 422, "validation_error"),
    ({"amount": 100, "expires_at": NOW}, 422, "validation_error"),
    ({"amount": 100, "expires_at": "2026-11-21T11:59:59Z"}, 422, "validation_error"),
    ({"amount": 100, "expires_at": "2026-12-01"}, 422, "validation_error"),
    ({"amount": 100, "applies_to_meters": ["nope"]}, 422, "unknown_meter"),
    ({"amount": 100, "applies_to_meters": ["api_calls", "nope"]}, 422, "unknown_meter"),
    ({"amount": 100, "applies_to_meters": []}, 422, "validation_error"),
    ({"amount": 100, "name": "  "}, 422, "validation_error"),
    ({"amount": 100, "name": "x" * 201}, 422, "validation_error"),
    ({"amount": 100, "category": "gift"}, 422, "validation_error"),
    ({"amount": 100, "metadata": {"k" * 41: "v"}}, 422, "validation_error"),
    ({"amount": 100, "surprise": 1}, 422, "validation_error"),
    ({"amount": 1.5}, 422, "validation_error"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_GRANTS)
async def test_every_bad_grant_is_refused_and_writes_nothing(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    ctx: AppContext,
    body: dict,
    status: int,
    code: str,
) -> None:
    await customer(client, tenant, "c1")
    await meter(client, tenant, "api_calls")
    fields = {"name": "Credit", "category": "paid", **body}
    response = await client.post("/v1/customers/c1/credit-grants", headers=tenant.headers(), json=fields)
    assert_problem(response, status, code)
    assert await credit_rows(ctx) == {"credit_grants": 0, "credit_ledger_entries": 0, "credit_balances": 0}
    listed = await call(client, tenant, "/v1/invoices", method="GET")
    assert listed["data"] == []


async def test_a_missing_body_field_and_malformed_json(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    headers = tenant.headers()
    response = await client.post("/v1/customers/c1/credit-grants", headers=headers, json={"amount": 5})
    assert_problem(response, 422, "validation_error")
    response = await client.post(
        "/v1/customers/c1/credit-grants",
        headers={**headers, "content-type": "application/json"},
        content=b"{",
    )
    assert response.status_code == 400


async def test_an_archived_customer_gets_no_grant(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1")
    await call(client, tenant, "/v1/customers/c1", method="DELETE")
    response = await client.post(
        "/v1/customers/c1/credit-grants",
        headers=tenant.headers(),
        json={"name": "Late", "category": "promotional", "amount": 100},
    )
    assert_problem(response, 409, "customer_archived")
    assert (await credit_rows(ctx))["credit_grants"] == 0


async def test_another_tenants_grants_and_customers_answer_404(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: object
) -> None:
    other = await make_tenant("Other")  # type: ignore[operator]
    await customer(client, tenant, "c1")
    theirs = await customer(client, other, "c1")
    their_grant = await grant(client, other, "c1", amount=700)
    mine = await grant(client, tenant, "c1", amount=300)
    headers = tenant.headers()
    for method, path in [
        ("GET", f"/v1/credit-grants/{their_grant['id']}"),
        ("POST", f"/v1/credit-grants/{their_grant['id']}/void"),
        ("GET", f"/v1/customers/{theirs['id']}/credit-balance"),
        ("GET", f"/v1/customers/{theirs['id']}/credit-ledger"),
        ("GET", f"/v1/credit-grants?customer={theirs['id']}"),
        ("GET", f"/v1/customers/c1/credit-ledger?credit_grant={their_grant['id']}"),
        ("GET", "/v1/credit-grants/crg_doesnotexist"),
    ]:
        assert_problem(await client.request(method, path, headers=headers), 404, "not_found")
    response = await client.post(
        f"/v1/customers/{theirs['id']}/credit-grants",
        headers=headers,
        json={"name": "x", "category": "promotional", "amount": 1},
    )
    assert_problem(response, 404, "not_found")
    listed = await call(client, tenant, "/v1/credit-grants", method="GET")
    assert [g["id"] for g in listed["data"]] == [mine["id"]]
    assert (await get_grant(client, other, their_grant["id"]))["status"] == "active"
    assert (await balance(client, other, "c1"))["balances"][0]["available"] == 700


async def test_the_balance_lists_grants_in_burn_order(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    # Created in this order; burn order is priority, then expiry (none last), then age.
    specs = [
        ("p50-none-old", 50, None),
        ("p50-late", 50, "2027-03-01T00:00:00Z"),
        ("p10-none", 10, None),
        ("p50-early", 50, "2027-01-01T00:00:00Z"),
        ("p50-none-new", 50, None),
        ("p0", 0, "2027-06-01T00:00:00Z"),
        ("p100", 100, "2026-12-01T00:00:00Z"),
    ]
    for name, priority, expires_at in specs:
        body = {"name": name, "amount": 100, "priority": priority}
        await grant(client, tenant, "c1", **(body | ({"expires_at": expires_at} if expires_at else {})))
    (usd,) = (await balance(client, tenant, "c1"))["balances"]
    assert [g["name"] for g in usd["grants"]] == [
        "p0",
        "p10-none",
        "p50-early",
        "p50-late",
        "p50-none-old",
        "p50-none-new",
        "p100",
    ]
    assert usd["available"] == 700


async def test_list_filters_by_customer_and_status(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await customer(client, tenant, "c1")
    await customer(client, tenant, "c2")
    a = await grant(client, tenant, "c1", amount=100)
    b = await grant(client, tenant, "c2", amount=200)
    c = await grant(client, tenant, "c1", amount=300)
    await void(client, tenant, c["id"])

    async def ids(**params: str) -> list[str]:
        response = await client.get("/v1/credit-grants", headers=tenant.headers(), params=params)
        assert response.status_code == 200, response.text
        return [g["id"] for g in response.json()["data"]]

    assert await ids() == [c["id"], b["id"], a["id"]]
    assert await ids(customer="c1") == [c["id"], a["id"]]
    assert await ids(customer="c1", status="active") == [a["id"]]
    assert await ids(status="voided") == [c["id"]]
    assert await ids(limit="1", starting_after=c["id"]) == [b["id"]]
    response = await client.get("/v1/credit-grants", headers=tenant.headers(), params={"status": "nope"})
    assert_problem(response, 422, "validation_error")


async def test_a_grant_expires_at_its_instant_with_an_entry_dated_then(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1")
    expiring = await grant(client, tenant, "c1", amount=800, expires_at=later(days=3))
    lasting = await grant(client, tenant, "c1", amount=200)
    await run(client, tenant, later(days=3, seconds=-1))
    assert (await get_grant(client, tenant, expiring["id"]))["status"] == "active"
    with listening({"credit_grant.expired"}) as seen:
        await run(client, tenant, later(days=5))
        await jobs.dispatch_outbox(ctx)
    expired = await get_grant(client, tenant, expiring["id"])
    assert (expired["status"], expired["available"]) == ("expired", 0)
    assert (await get_grant(client, tenant, lasting["id"]))["status"] == "active"
    entries = await ledger(client, tenant, "c1")
    newest = entries[0]
    assert (newest["type"], newest["amount"], newest["balance_after"]) == ("expired", -800, 200)
    assert newest["created_at"] == later(days=3)
    assert_ledger_consistent(entries, 200)
    assert [m.payload["object"]["id"] for m in seen] == [expiring["id"]]
    assert seen[0].payload["object"]["status"] == "expired"
    await run(client, tenant, later(days=6))
    assert len(await ledger(client, tenant, "c1")) == len(entries)
    assert_problem(
        await client.post(f"/v1/credit-grants/{expiring['id']}/void", headers=tenant.headers()),
        409,
        "invalid_transition",
    )


async def test_voiding_writes_an_entry_for_what_is_left_once(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    await customer(client, tenant, "c1")
    kept = await grant(client, tenant, "c1", amount=1000)
    target = await grant(client, tenant, "c1", amount=450)
    clock.advance(timedelta(hours=1))
    with listening({"credit_grant.voided"}) as seen:
        voided = await void(client, tenant, target["id"])
        await jobs.dispatch_outbox(ctx)
    assert (voided["status"], voided["available"], voided["voided_at"]) == ("voided", 0, later(hours=1))
    assert [m.payload["object"] for m in seen] == [voided]
    entries = await ledger(client, tenant, "c1")
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("voided", -450, 1000),
        ("granted", 450, 1450),
        ("granted", 1000, 1000),
    ]
    assert_problem(
        await client.post(f"/v1/credit-grants/{target['id']}/void", headers=tenant.headers()),
        409,
        "invalid_transition",
    )
    assert len(await ledger(client, tenant, "c1")) == 3
    assert (await get_grant(client, tenant, kept["id"]))["available"] == 1000
    finance = await client.post(f"/v1/credit-grants/{kept['id']}/void", headers=tenant.headers(Scope.FINANCE))
    assert finance.status_code == 403


async def test_the_ledger_filters_by_currency_and_grant(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    a = await grant(client, tenant, "c1", amount=100)
    b = await grant(client, tenant, "c1", amount=250)
    await void(client, tenant, a["id"])
    assert [e["type"] for e in await ledger(client, tenant, "c1", credit_grant=a["id"])] == [
        "voided",
        "granted",
    ]
    assert [e["credit_grant"] for e in await ledger(client, tenant, "c1", credit_grant=b["id"])] == [b["id"]]
    assert len(await ledger(client, tenant, "c1", currency="USD")) == 3
    assert await ledger(client, tenant, "c1", currency="EUR") == []
    response = await client.get(
        "/v1/customers/c1/credit-ledger", headers=tenant.headers(), params={"currency": "usd"}
    )
    assert_problem(response, 422, "validation_error")


# Paid grants


async def test_a_paid_grant_is_pending_until_its_invoice_is_paid(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1", **CARD)
    with listening({"credit_grant.created", "credit_grant.activated", "invoice.finalized"}) as seen:
        bought = await grant(client, tenant, "c1", name="Q1 prepaid", category="paid", amount=100000)
        await jobs.dispatch_outbox(ctx)
    assert (bought["status"], bought["available"], bought["effective_at"]) == ("pending", 0, None)
    assert bought["invoice"].startswith("inv_")
    invoice = await get_invoice(client, tenant, bought["invoice"])
    assert (invoice["billing_reason"], invoice["subscription"], invoice["status"]) == (
        "credit_grant",
        None,
        "open",
    )
    assert invoice["number"] is not None and invoice["due_at"] == NOW
    assert [(x["kind"], x["amount"], x["meter"]) for x in invoice["lines"]] == [
        ("credit_purchase", 100000, None)
    ]
    assert (invoice["total"], invoice["amount_due"]) == (100000, 100000)
    (usd,) = (await balance(client, tenant, "c1"))["balances"]
    assert (usd["available"], usd["pending"]) == (0, 100000)
    assert [g["status"] for g in usd["grants"]] == ["pending"]
    assert await ledger(client, tenant, "c1") == []

    with listening({"credit_grant.activated"}, name="after") as activated:
        await run(client, tenant, later(minutes=1))
        await jobs.dispatch_outbox(ctx)
    paid = await get_invoice(client, tenant, bought["invoice"])
    assert (paid["status"], paid["amount_paid"]) == ("paid", 100000)
    active = await get_grant(client, tenant, bought["id"])
    assert (active["status"], active["available"], active["effective_at"]) == (
        "active",
        100000,
        later(minutes=1),
    )
    (entry,) = await ledger(client, tenant, "c1")
    assert (entry["type"], entry["amount"], entry["balance_after"], entry["invoice"]) == (
        "granted",
        100000,
        100000,
        bought["invoice"],
    )
    (usd,) = (await balance(client, tenant, "c1"))["balances"]
    assert (usd["available"], usd["pending"]) == (100000, 0)
    assert [m.topic for m in seen if m.topic.startswith("credit_grant")] == ["credit_grant.created"]
    assert seen[0].payload["object"]["invoice"] == bought["invoice"]
    assert [m.payload["object"] for m in activated] == [active]
    await run(client, tenant, later(minutes=2))
    assert len(await ledger(client, tenant, "c1")) == 1


async def test_voiding_a_pending_grant_voids_its_unpaid_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1", **DECLINED)
    bought = await grant(client, tenant, "c1", category="paid", amount=5000)
    await run(client, tenant, later(minutes=1))
    unpaid = await get_invoice(client, tenant, bought["invoice"])
    assert unpaid["status"] == "open" and [p["status"] for p in unpaid["payments"]] == ["failed"]
    voided = await void(client, tenant, bought["id"])
    assert (voided["status"], voided["available"], voided["voided_at"]) == ("voided", 0, NOW)
    assert (await get_invoice(client, tenant, bought["invoice"]))["status"] == "void"
    assert await ledger(client, tenant, "c1") == []
    await void(client, tenant, bought["id"], status=409)


@pytest.mark.parametrize(
    ("action", "invoice_status"), [("void", "void"), ("mark-uncollectible", "uncollectible")]
)
async def test_a_paid_grant_is_voided_with_its_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle, action: str, invoice_status: str
) -> None:
    await customer(client, tenant, "c1")
    bought = await grant(client, tenant, "c1", category="paid", amount=5000)
    kept = await grant(client, tenant, "c1", category="paid", amount=7000)
    assert (await act(client, tenant, bought["invoice"], action))["status"] == invoice_status
    assert (await get_grant(client, tenant, bought["id"]))["status"] == "voided"
    assert (await get_grant(client, tenant, kept["id"]))["status"] == "pending"
    (usd,) = (await balance(client, tenant, "c1"))["balances"]
    assert (usd["available"], usd["pending"]) == (0, 7000)


async def test_a_paid_grant_that_expires_unpaid_is_never_granted(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    bought = await grant(client, tenant, "c1", category="paid", amount=5000, expires_at=later(days=1))
    await run(client, tenant, later(days=2))
    assert (await get_grant(client, tenant, bought["id"]))["status"] == "expired"
    assert await ledger(client, tenant, "c1") == []


# credit_balance.low


async def test_low_balance_fires_once_per_crossing_and_rearms(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await customer(client, tenant, "c1")
    await set_low_threshold(client, tenant, "c1", 500, monkeypatch)
    with listening({"credit_balance.low"}) as seen:
        a = await grant(client, tenant, "c1", amount=300)
        b = await grant(client, tenant, "c1", amount=400, expires_at=later(days=1))
        await void(client, tenant, a["id"])  # 700 -> 400: crosses
        await run(client, tenant, later(days=2))  # 400 -> 0: already below
        c = await grant(client, tenant, "c1", amount=500)  # back at the threshold: re-armed
        d = await grant(client, tenant, "c1", amount=100)
        await void(client, tenant, d["id"])  # 600 -> 500: not below
        await void(client, tenant, c["id"])  # 500 -> 0: crosses again
        await jobs.dispatch_outbox(ctx)
    assert (await get_grant(client, tenant, b["id"]))["status"] == "expired"
    assert [m.payload["object"] for m in seen] == [
        {"customer": created["id"], "currency": "USD", "available": 400, "threshold": 500},
        {"customer": created["id"], "currency": "USD", "available": 0, "threshold": 500},
    ]
    assert_ledger_consistent(await ledger(client, tenant, "c1"), 0)


async def test_webhook_endpoints_take_the_credit_events(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    events = [
        "credit_grant.created",
        "credit_grant.activated",
        "credit_grant.voided",
        "credit_grant.expired",
        "credit_balance.low",
    ]
    body = {"url": "https://example.com/hooks", "events": events}
    created = await call(client, tenant, "/v1/webhook-endpoints", body, status=201)
    assert sorted(created["events"]) == sorted(events)
