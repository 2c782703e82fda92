"""Invoice items, standalone invoices, memo and metadata, net terms and overdue invoices, through
the API."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import httpx
import pytest

from billing import jobs
from billing.core.clock import FrozenClock, format_timestamp, parse_timestamp
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import FROZEN_AT, TenantHandle, listening
from tests.finance_browser import FinanceBrowser
from tests.integration.invoicing.test_invoice_lifecycle import (
    act,
    call,
    get_invoice,
    line,
    listed,
    run,
    send,
    setup,
)
from tests.integration.web.test_auth import assert_problem

QUARTER_UNIT = [{"meter": "units", "model": "per_unit", "unit_amount": "0.25"}]
NOW = format_timestamp(FROZEN_AT)


def cents(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def item(client: httpx.AsyncClient, tenant: TenantHandle, status: int = 201, **body: object) -> dict:
    return await call(client, tenant, "/v1/invoice-items", body, status=status)


async def items_of(client: httpx.AsyncClient, tenant: TenantHandle, **params: str) -> list[dict]:
    response = await client.get("/v1/invoice-items", headers=tenant.headers(), params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def customer(
    client: httpx.AsyncClient, tenant: TenantHandle, external_id: str, **fields: object
) -> dict:
    body = {"external_id": external_id, "timezone": "UTC", **fields}
    return await call(client, tenant, "/v1/customers", body, status=201)


async def standalone(client: httpx.AsyncClient, tenant: TenantHandle, **body: object) -> dict:
    return await call(client, tenant, "/v1/invoices", body, status=201)


def at(base: str, **delta: float) -> str:
    return format_timestamp(parse_timestamp(base) + timedelta(**delta))


# Items on the next invoice


async def test_pending_items_go_onto_the_next_cycle_invoice_after_its_usage_in_creation_order(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    clock.set(datetime(2026, 10, 20, tzinfo=UTC))
    await setup(
        client, tenant, ["c1", "c2"], starts_at="2026-10-01T00:00:00Z", prices=QUARTER_UNIT, base_fee=1000
    )
    await send(
        client,
        tenant,
        ("e1", "c1", "2026-10-02T00:00:00Z", "7"),
        ("e2", "c1", "2026-10-09T00:00:00Z", "5"),
        ("e3", "c1", "2026-10-15T00:00:00Z", "9"),
    )
    setup_fee = await item(client, tenant, customer="c1", description="Setup", amount=5000, currency="USD")
    period = {"start": "2026-10-01T00:00:00Z", "end": "2026-10-10T00:00:00Z"}
    credit = await item(
        client, tenant, customer="c1", description="Outage credit", amount=-1250, period=period
    )
    assert (setup_fee["status"], setup_fee["invoice"], setup_fee["id"][:3]) == ("pending", None, "ii_")
    assert [i["id"] for i in await items_of(client, tenant, customer="c1", status="pending")] == [
        credit["id"],
        setup_fee["id"],
    ]

    upcoming = await call(client, tenant, "/v1/customers/c1/upcoming-invoice", method="GET")
    assert [(x["kind"], x["amount"]) for x in upcoming["lines"][-2:]] == [
        ("invoice_item", 5000),
        ("invoice_item", -1250),
    ]

    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 2
    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 0

    invoices = {i["customer_external_id"]: i for i in await listed(client, tenant)}
    october = invoices["c1"]
    assert [x["kind"] for x in october["lines"]] == ["base_fee", "usage", "invoice_item", "invoice_item"]
    first, second = october["lines"][2:]
    assert (first["invoice_item"], first["description"], first["amount"]) == (setup_fee["id"], "Setup", 5000)
    assert (first["period_start"], first["period_end"]) == ("2026-10-20T00:00:00Z",) * 2
    assert (second["invoice_item"], second["amount"]) == (credit["id"], -1250)
    assert (second["period_start"], second["period_end"]) == (period["start"], period["end"])
    usage = cents(Decimal(7 + 5 + 9) * Decimal("0.25") * 100)
    assert line(october, "usage")["amount"] == usage == 525
    assert october["total"] == october["amount_due"] == 1000 + usage + 5000 - 1250
    assert october["billing_reason"] == "subscription_cycle"
    assert [x["kind"] for x in invoices["c2"]["lines"]] == ["base_fee", "usage"]
    for created in (setup_fee, credit):
        got = await call(client, tenant, f"/v1/invoice-items/{created['id']}", method="GET")
        assert (got["status"], got["invoice"]) == ("invoiced", october["id"])

    # Voiding waives them: they stay on the void invoice, and November's has none.
    await act(client, tenant, october["id"], "void")
    assert (await run(client, tenant, "2026-12-01T00:00:00Z"))["invoices_created"] == 2
    november = [i for i in await listed(client, tenant, customer="c1") if i["id"] != october["id"]]
    assert [x["kind"] for x in november[0]["lines"]] == ["base_fee", "usage"]
    assert {i["status"] for i in await items_of(client, tenant, customer="c1")} == {"invoiced"}


async def test_an_item_joins_a_draft_at_once_and_survives_its_recomputation_after_late_usage(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", prices=QUARTER_UNIT)
    await send(client, tenant, ("e1", "c1", "2026-10-10T00:00:00Z", "10"))
    await run(client, tenant, "2026-11-01T00:00:00Z")
    (draft,) = await listed(client, tenant)
    assert draft["total"] == 250

    joined = await item(
        client, tenant, customer="c1", description="Support", amount=3333, invoice=draft["id"]
    )
    assert (joined["status"], joined["invoice"]) == ("invoiced", draft["id"])
    now = await get_invoice(client, tenant, draft["id"])
    assert [x["kind"] for x in now["lines"]] == ["usage", "invoice_item"]
    assert now["total"] == now["amount_due"] == 250 + 3333

    await send(client, tenant, ("late", "c1", "2026-10-31T23:00:00Z", "3"))
    assert (await run(client, tenant, "2026-11-01T06:00:00Z"))["drafts_recomputed"] == 1
    recomputed = await get_invoice(client, tenant, draft["id"])
    usage = cents(Decimal(13) * Decimal("0.25") * 100)
    assert [x["kind"] for x in recomputed["lines"]] == ["usage", "invoice_item"]
    assert recomputed["total"] == usage + 3333 == 325 + 3333

    assert (await run(client, tenant, "2026-11-02T00:00:00Z"))["invoices_finalized"] == 1
    final = await get_invoice(client, tenant, draft["id"])
    assert (final["status"], final["total"]) == ("open", usage + 3333)
    assert line(final, "invoice_item", None)["invoice_item"] == joined["id"]

    refused = await client.post(
        "/v1/invoice-items",
        headers=tenant.headers(),
        json={"customer": "c1", "description": "Late", "amount": 100, "invoice": draft["id"]},
    )
    assert_problem(refused, 409, "invoice_not_draft")
    assert len(await items_of(client, tenant)) == 1


async def test_only_a_pending_item_can_be_deleted(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await customer(client, tenant, "c1")
    kept = await item(client, tenant, customer="c1", description="Kept", amount=700)
    dropped = await item(client, tenant, customer="c1", description="Dropped", amount=300)
    invoice = await standalone(client, tenant, customer="c1", items=[{"description": "Fee", "amount": 100}])
    (fee,) = [i for i in await items_of(client, tenant) if i["invoice"] == invoice["id"]]

    deleted = await call(client, tenant, f"/v1/invoice-items/{dropped['id']}", method="DELETE")
    assert (deleted["status"], deleted["deleted_at"]) == ("deleted", NOW)
    again = await client.delete(f"/v1/invoice-items/{dropped['id']}", headers=tenant.headers())
    assert_problem(again, 409, "invalid_transition")
    invoiced = await client.delete(f"/v1/invoice-items/{fee['id']}", headers=tenant.headers())
    assert_problem(invoiced, 409, "invalid_transition")
    assert (await call(client, tenant, f"/v1/invoice-items/{fee['id']}", method="GET"))[
        "status"
    ] == "invoiced"
    assert [i["id"] for i in await items_of(client, tenant, status="pending")] == [kept["id"]]
    assert [i["id"] for i in await items_of(client, tenant, status="deleted")] == [dropped["id"]]


async def test_an_item_in_another_currency_or_of_no_amount_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    mismatch = await client.post(
        "/v1/invoice-items",
        headers=tenant.headers(),
        json={"customer": "c1", "description": "Fee", "amount": 100, "currency": "EUR"},
    )
    assert_problem(mismatch, 422, "currency_mismatch")
    zero = await client.post(
        "/v1/invoice-items",
        headers=tenant.headers(),
        json={"customer": "c1", "description": "Fee", "amount": 0},
    )
    assert assert_problem(zero, 422, "validation_error")["errors"][0]["field"] == "amount"
    assert await items_of(client, tenant) == []


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({f"k{n}": "v" for n in range(51)}, "metadata"),
        ({"k" * 41: "v"}, "metadata"),
        ({"note": "x" * 501}, "metadata.note"),
    ],
)
async def test_metadata_beyond_the_limits_is_a_422_naming_the_field(
    client: httpx.AsyncClient, tenant: TenantHandle, metadata: dict[str, str], field: str
) -> None:
    await customer(client, tenant, "c1")
    body = {"customer": "c1", "description": "Fee", "amount": 100, "metadata": metadata}
    response = await client.post("/v1/invoice-items", headers=tenant.headers(), json=body)
    assert assert_problem(response, 422, "validation_error")["errors"][0]["field"] == field
    invoice = {"customer": "c1", "items": [{"description": "Fee", "amount": 100}], "metadata": metadata}
    response = await client.post("/v1/invoices", headers=tenant.headers(), json=invoice)
    assert_problem(response, 422, "validation_error")
    at_limit = {f"k{n:02d}" + "x" * 37: "v" * 500 for n in range(50)}
    ok = await item(client, tenant, customer="c1", description="Fee", amount=100, metadata=at_limit)
    assert ok["metadata"] == at_limit
    assert await listed(client, tenant) == []


# Standalone invoices and net terms


async def test_a_standalone_invoice_is_finalized_after_the_grace_period_and_charged_at_its_due_date(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    terms = await call(client, tenant, "/v1/tenant", {"net_terms_days": 30}, method="PATCH")
    assert terms["net_terms_days"] == 30
    await customer(client, tenant, "c1", default_payment_method="pm_card_visa")
    pending = await item(client, tenant, customer="c1", description="For later", amount=999)
    period = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-15T00:00:00Z"}
    draft = await standalone(
        client,
        tenant,
        customer="c1",
        items=[
            {"description": "Consulting", "amount": 12000, "metadata": {"po": "7"}},
            {"description": "Discount", "amount": -2000, "period": period},
            {"description": "Travel", "amount": 450},
        ],
        memo="Thank you",
        metadata={"order": "A-1"},
    )
    assert (draft["status"], draft["subscription"], draft["billing_reason"]) == ("draft", None, "manual")
    assert draft["period_start"] == draft["period_end"] == draft["created_at"] == NOW
    assert [(x["kind"], x["description"], x["amount"]) for x in draft["lines"]] == [
        ("invoice_item", "Consulting", 12000),
        ("invoice_item", "Discount", -2000),
        ("invoice_item", "Travel", 450),
    ]
    assert (draft["lines"][1]["period_start"], draft["lines"][1]["period_end"]) == (
        period["start"],
        period["end"],
    )
    assert draft["total"] == 12000 - 2000 + 450
    assert (draft["memo"], draft["metadata"], draft["overdue"]) == ("Thank you", {"order": "A-1"}, False)
    assert (await call(client, tenant, f"/v1/invoice-items/{pending['id']}", method="GET"))[
        "status"
    ] == "pending"

    assert (await run(client, tenant, at(NOW, hours=23)))["invoices_finalized"] == 0
    assert (await run(client, tenant, at(NOW, hours=24)))["invoices_finalized"] == 1
    opened = await get_invoice(client, tenant, draft["id"])
    assert opened["status"] == "open" and opened["number"]
    assert opened["finalized_at"] == at(NOW, hours=24)
    assert opened["due_at"] == at(NOW, hours=24 + 30 * 24)
    assert opened["total"] == 10450 and opened["payments"] == []

    assert (await run(client, tenant, at(opened["due_at"], seconds=-1)))["payments_attempted"] == 0
    assert (await get_invoice(client, tenant, draft["id"]))["payments"] == []
    assert (await run(client, tenant, opened["due_at"]))["payments_attempted"] == 1
    paid = await get_invoice(client, tenant, draft["id"])
    assert (paid["status"], [p["amount"] for p in paid["payments"]]) == ("paid", [10450])


async def test_a_customers_net_terms_override_the_tenants(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/tenant", {"net_terms_days": 30}, method="PATCH")
    own = await customer(client, tenant, "c1", net_terms_days=7)
    assert own["net_terms_days"] == 7
    inherits = await customer(client, tenant, "c2")
    assert inherits["net_terms_days"] is None
    patched = await call(client, tenant, "/v1/customers/c2", {"net_terms_days": 0}, method="PATCH")
    assert patched["net_terms_days"] == 0
    due = {}
    for external_id in ("c1", "c2"):
        draft = await standalone(
            client, tenant, customer=external_id, items=[{"description": "Fee", "amount": 100}]
        )
        due[external_id] = (await act(client, tenant, draft["id"], "finalize"))["due_at"]
    assert due == {"c1": at(NOW, days=7), "c2": NOW}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tenant", {"net_terms_days": 366}),
        ("/v1/tenant", {"net_terms_days": -1}),
        ("/v1/customers", {"external_id": "c9", "net_terms_days": 400}),
    ],
)
async def test_net_terms_outside_0_to_365_days_are_a_422(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: dict
) -> None:
    method = "PATCH" if path == "/v1/tenant" else "POST"
    response = await client.request(method, path, headers=tenant.headers(), json=body)
    assert assert_problem(response, 422, "validation_error")["errors"][0]["field"] == "net_terms_days"


async def test_a_draft_with_auto_finalize_false_waits_for_a_manual_finalize(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    draft = await standalone(
        client, tenant, customer="c1", items=[{"description": "Fee", "amount": 100}], auto_finalize=False
    )
    assert (await run(client, tenant, at(NOW, days=40)))["invoices_finalized"] == 0
    assert (await get_invoice(client, tenant, draft["id"]))["status"] == "draft"
    assert (await act(client, tenant, draft["id"], "finalize"))["status"] == "open"


async def test_the_memo_changes_only_on_a_draft_and_the_metadata_at_any_time(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    draft = await standalone(client, tenant, customer="c1", items=[{"description": "Fee", "amount": 100}])
    path = f"/v1/invoices/{draft['id']}"
    assert (await call(client, tenant, path, {"memo": "m" * 2000}, method="PATCH"))["memo"] == "m" * 2000
    too_long = await client.patch(
        path, headers=tenant.headers(), json={"memo": "m" * 2001, "metadata": {"a": "1"}}
    )
    assert assert_problem(too_long, 422, "validation_error")["errors"][0]["field"] == "memo"
    assert (await get_invoice(client, tenant, draft["id"]))["metadata"] == {}

    await act(client, tenant, draft["id"], "finalize")
    frozen = await client.patch(path, headers=tenant.headers(), json={"memo": "changed"})
    assert_problem(frozen, 409, "invoice_not_draft")
    tagged = await call(client, tenant, path, {"metadata": {"crm": "42"}}, method="PATCH")
    assert (tagged["memo"], tagged["metadata"], tagged["status"]) == ("m" * 2000, {"crm": "42"}, "open")
    cleared = await call(client, tenant, path, {"metadata": None}, method="PATCH")
    assert cleared["metadata"] == {}


# Overdue


async def test_an_unpaid_invoice_past_its_due_date_is_overdue_in_the_list_the_csv_and_one_webhook_event(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    endpoint = {"url": "http://127.0.0.1:9/hooks", "events": ["invoice.overdue"]}
    assert (await call(client, tenant, "/v1/webhook-endpoints", endpoint, status=201))["events"] == [
        "invoice.overdue"
    ]
    await customer(client, tenant, "late-payer", net_terms_days=7)  # no payment method: the charge fails
    draft = await standalone(
        client, tenant, customer="late-payer", items=[{"description": "Fee", "amount": 2500}]
    )
    paid_at_once = await standalone(
        client,
        tenant,
        customer="late-payer",
        items=[{"description": "Free", "amount": 1}, {"description": "-", "amount": -1}],
    )
    opened = await act(client, tenant, draft["id"], "finalize")
    await act(client, tenant, paid_at_once["id"], "finalize")
    due = opened["due_at"]
    assert due == at(NOW, days=7)
    assert [i["id"] for i in await listed(client, tenant, overdue="true")] == []

    with listening({"invoice.overdue"}) as seen:
        assert (await run(client, tenant, at(due, hours=1)))["invoices_overdue"] == 1
        assert (await run(client, tenant, at(due, hours=2)))["invoices_overdue"] == 0
    assert [m.payload["invoice_id"] for m in seen] == [draft["id"]]
    assert seen[0].payload["object"]["overdue"] is True
    assert seen[0].payload["object"]["payments"][0]["status"] == "failed"

    clock.set(parse_timestamp(due))
    assert [i["id"] for i in await listed(client, tenant, overdue="true")] == []
    clock.set(parse_timestamp(at(due, seconds=1)))
    overdue = await listed(client, tenant, overdue="true")
    assert [(i["id"], i["overdue"]) for i in overdue] == [(draft["id"], True)]
    assert {i["id"] for i in await listed(client, tenant, overdue="false")} == {paid_at_once["id"]}

    response = await client.get(
        "/v1/invoices/export.csv", headers=tenant.headers(Scope.FINANCE), params={"overdue": "true"}
    )
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [(r["invoice_id"], r["overdue"], r["billing_reason"], r["subscription"]) for r in rows] == [
        (draft["id"], "true", "manual", "")
    ]
    assert rows[0]["due_at"] == due

    page = FinanceBrowser(client)
    assert (await page.log_in(tenant.keys[Scope.FINANCE])).status_code == 303
    listing = (await page.get("/finance/invoices")).text
    assert listing.count('<span class="badge overdue">overdue</span>') == 1
    assert due[:10] in listing
    detail = (await page.get(f"/finance/invoices/{draft['id']}")).text
    assert '<span class="badge overdue">overdue</span>' in detail


# Isolation


async def test_another_tenants_customer_and_draft_answer_404(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: object
) -> None:
    other = await make_tenant(name="Other")  # type: ignore[operator]
    await customer(client, other, "theirs")
    theirs = await standalone(client, other, customer="theirs", items=[{"description": "Fee", "amount": 100}])
    await customer(client, tenant, "mine")
    foreign_customer = await client.post(
        "/v1/invoice-items",
        headers=tenant.headers(),
        json={"customer": "theirs", "description": "x", "amount": 1},
    )
    assert_problem(foreign_customer, 404, "not_found")
    foreign_draft = await client.post(
        "/v1/invoice-items",
        headers=tenant.headers(),
        json={"customer": "mine", "description": "x", "amount": 1, "invoice": theirs["id"]},
    )
    assert_problem(foreign_draft, 404, "not_found")
    assert await items_of(client, tenant) == []
    assert (await get_invoice(client, other, theirs["id"]))["total"] == 100


@pytest.mark.postgres_only
async def test_concurrent_billing_runs_put_each_item_on_one_invoice_the_customers_earliest(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    customers = [f"c{n:02d}" for n in range(30)]
    await setup(client, tenant, customers, starts_at="2026-09-01T00:00:00Z", base_fee=1000)
    for external_id in customers:
        await item(client, tenant, customer=external_id, description="Setup", amount=400)
        await item(client, tenant, customer=external_id, description="Credit", amount=-150)
    run_at = jobs.Run(at=datetime(2026, 11, 2, tzinfo=UTC))
    await asyncio.gather(jobs.run_jobs(ctx, run_at), jobs.run_jobs(ctx, run_at))

    everything = await listed(client, tenant)
    assert len(everything) == 60
    on_lines = Counter(x["invoice_item"] for i in everything for x in i["lines"] if x["invoice_item"])
    all_items = await items_of(client, tenant, limit="100")
    assert len(on_lines) == len(all_items) == 60 and set(on_lines.values()) == {1}
    for invoice in everything:
        september = invoice["period_start"] == "2026-09-01T00:00:00Z"
        amounts = [x["amount"] for x in invoice["lines"] if x["kind"] == "invoice_item"]
        assert amounts == ([400, -150] if september else [])
        assert invoice["total"] == 1000 + sum(amounts)
    assert {(i["status"], bool(i["invoice"])) for i in all_items} == {("invoiced", True)}
