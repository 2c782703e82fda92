"""Credits on invoices, through the API, in USD, JPY and KWD: grants covering part, all and more
than an invoice, a meter-scoped grant, a paid grant that only counts once paid, a void giving
credit back, and a negative total left as a grant. Amounts are checked against the Decimal
computation written here."""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_UP, Decimal

import httpx
import pytest

from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.integration.credits.helpers import (
    CARD,
    assert_ledger_consistent,
    balance,
    customer,
    get_grant,
    grant,
    ledger,
)
from tests.integration.invoicing.test_invoice_lifecycle import act, call, get_invoice, listed, run, send

EXPONENTS = {"USD": 2, "JPY": 0, "KWD": 3}
# Per currency: the base fee (minor units) and the unit prices (major units) of the two meters.
PRICES = {
    "USD": (1999, "0.013", "0.0075"),
    "JPY": (2500, "1.7", "0.35"),
    "KWD": (4750, "0.0137", "0.00215"),
}
QUANTITIES = {"api_calls": Decimal(1234), "storage": Decimal(6071)}
NOVEMBER_CLOSED = "2026-12-02T01:00:00Z"  # the month closed, a day of grace, finalized
DECEMBER_CLOSED = "2027-01-02T01:00:00Z"
CURRENCIES = pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])


def minor(major: Decimal, currency: str) -> int:
    return int((major * 10 ** EXPONENTS[currency]).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_lines(currency: str) -> list[tuple[str, str | None, int]]:
    """(kind, meter, amount) of the month's invoice, in line order."""
    base_fee, api_price, storage_price = PRICES[currency]
    return [
        ("base_fee", None, base_fee),
        ("usage", "api_calls", minor(QUANTITIES["api_calls"] * Decimal(api_price), currency)),
        ("usage", "storage", minor(QUANTITIES["storage"] * Decimal(storage_price), currency)),
    ]


def expected_credits(
    lines: list[tuple[str, str | None, int]], grants: list[tuple[str, int, list[str] | None]]
) -> list[tuple[str, int]]:
    """Grants in burn order (as given), each taking from the lines it covers what is left of them,
    never more than it holds nor than the total left."""
    left = [amount for _, _, amount in lines]
    total_left = sum(left)
    taken_by = []
    for grant_id, available, meters in grants:
        budget = min(available, total_left)
        taken = 0
        for i, (kind, meter, _) in enumerate(lines):
            covered = meters is None or (kind == "usage" and meter in meters)
            if covered and left[i] > 0:
                take = min(left[i], budget - taken)
                left[i] -= take
                taken += take
        if taken:
            taken_by.append((grant_id, taken))
            total_left -= taken
    return taken_by


async def billed_customer(
    client: httpx.AsyncClient, tenant: TenantHandle, currency: str, external_id: str = "c1", **fields: object
) -> dict:
    """A customer in ``currency`` on the month's plan from November 1st, with its usage sent."""
    base_fee, api_price, storage_price = PRICES[currency]
    code = f"metered-{currency.lower()}"
    if (await client.get(f"/v1/plans/{code}", headers=tenant.headers())).status_code == 404:
        for key in ("api_calls", "storage"):
            response = await client.post(
                "/v1/meters", headers=tenant.headers(), json={"key": key, "aggregation": "sum"}
            )
            assert response.status_code in (201, 409), response.text
        prices = [
            {"meter": "api_calls", "model": "per_unit", "unit_amount": api_price},
            {"meter": "storage", "model": "per_unit", "unit_amount": storage_price},
        ]
        plan = {"code": code, "name": code, "currency": currency, "base_fee": base_fee, "prices": prices}
        await call(client, tenant, "/v1/plans", plan, status=201)
    created = await customer(client, tenant, external_id, currency=currency, **fields)
    await subscribe(client, tenant, [external_id], starts_at="2026-11-01T00:00:00Z", plan=code)
    await send(
        client,
        tenant,
        (f"{external_id}-a", external_id, "2026-11-03T00:00:00Z", str(QUANTITIES["api_calls"]), "api_calls"),
        (f"{external_id}-s", external_id, "2026-11-04T00:00:00Z", str(QUANTITIES["storage"]), "storage"),
    )
    return created


async def november(client: httpx.AsyncClient, tenant: TenantHandle, external_id: str = "c1") -> dict:
    (invoice,) = [
        i for i in await listed(client, tenant, customer=external_id) if i["billing_reason"] != "credit_grant"
    ]
    return invoice


def assert_lines(invoice: dict, currency: str) -> int:
    lines = expected_lines(currency)
    assert [(x["kind"], x["meter"], x["amount"]) for x in invoice["lines"]] == lines
    total = sum(amount for _, _, amount in lines)
    assert (invoice["currency"], invoice["subtotal"], invoice["total"]) == (currency, total, total)
    return total


@CURRENCIES
@pytest.mark.parametrize("share", [Decimal("0.3"), Decimal(1), Decimal(2)], ids=["part", "all", "more"])
async def test_a_grant_covers_part_all_or_more_than_the_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle, currency: str, share: Decimal
) -> None:
    await billed_customer(client, tenant, currency)
    total = sum(amount for _, _, amount in expected_lines(currency))
    amount = int((total * share).to_integral_value(rounding=ROUND_HALF_UP))
    credit = await grant(client, tenant, "c1", amount=amount)
    await run(client, tenant, NOVEMBER_CLOSED)
    invoice = await november(client, tenant)
    assert assert_lines(invoice, currency) == total
    applied = min(amount, total)
    assert invoice["credits_applied"] == applied
    assert invoice["amount_due"] == total - applied
    assert invoice["status"] == ("paid" if applied == total else "open")
    # Without a card the charge fails, but it asked for what the credits left, and only that.
    assert [p["amount"] for p in invoice["payments"]] == ([total - applied] if applied < total else [])
    after = await get_grant(client, tenant, credit["id"])
    assert (after["available"], after["status"]) == (
        amount - applied,
        "active" if amount > applied else "depleted",
    )
    entries = await ledger(client, tenant, "c1")
    assert [(e["type"], e["amount"], e["invoice"]) for e in entries] == [
        ("applied", -applied, invoice["id"]),
        ("granted", amount, None),
    ]
    assert_ledger_consistent(entries, amount - applied)


@CURRENCIES
async def test_grants_apply_in_burn_order_and_a_meter_scoped_one_only_to_its_meter(
    client: httpx.AsyncClient, tenant: TenantHandle, currency: str
) -> None:
    await billed_customer(client, tenant, currency)
    lines = expected_lines(currency)
    storage = lines[2][2]
    # Created in an order other than burn order: scoped (priority 10), early (50, expiring), plain.
    plain = await grant(client, tenant, "c1", amount=lines[0][2] // 3)
    early = await grant(client, tenant, "c1", amount=lines[1][2] // 2 + 7, expires_at="2027-03-01T00:00:00Z")
    scoped = await grant(client, tenant, "c1", amount=storage * 2, priority=10, applies_to_meters=["storage"])
    await run(client, tenant, NOVEMBER_CLOSED)
    invoice = await november(client, tenant)
    total = assert_lines(invoice, currency)
    burn = [
        (scoped["id"], scoped["amount"], ["storage"]),
        (early["id"], early["amount"], None),
        (plain["id"], plain["amount"], None),
    ]
    applications = expected_credits(lines, burn)
    assert applications[0] == (scoped["id"], storage)
    assert invoice["credits_applied"] == sum(taken for _, taken in applications)
    assert invoice["amount_due"] == total - invoice["credits_applied"]
    entries = await ledger(client, tenant, "c1", credit_grant=scoped["id"])
    assert [(e["type"], e["amount"]) for e in entries] == [("applied", -storage), ("granted", storage * 2)]
    taken = {grant_id: amount for grant_id, amount in applications}
    for made in (scoped, early, plain):
        assert (await get_grant(client, tenant, made["id"]))["available"] == made["amount"] - taken.get(
            made["id"], 0
        )
    assert_ledger_consistent(
        await ledger(client, tenant, "c1"), sum(g[1] for g in burn) - invoice["credits_applied"]
    )


@CURRENCIES
async def test_a_paid_grant_counts_only_once_its_invoice_is_paid(
    client: httpx.AsyncClient, tenant: TenantHandle, currency: str
) -> None:
    await billed_customer(client, tenant, currency, **CARD)
    total = sum(amount for _, _, amount in expected_lines(currency))
    bought = await grant(client, tenant, "c1", category="paid", amount=total // 2)
    purchase = await get_invoice(client, tenant, bought["invoice"])
    assert (purchase["currency"], purchase["total"], purchase["credits_applied"]) == (currency, total // 2, 0)
    # The month is finalized in the run that charges the purchase: the grant is still pending then.
    await run(client, tenant, NOVEMBER_CLOSED)
    invoice = await november(client, tenant)
    assert (invoice["credits_applied"], invoice["status"], invoice["amount_paid"]) == (0, "paid", total)
    assert (await get_invoice(client, tenant, bought["invoice"]))["status"] == "paid"
    assert (await get_grant(client, tenant, bought["id"]))["status"] == "active"
    # December's invoice (base fee only) takes it.
    await run(client, tenant, DECEMBER_CLOSED)
    (december,) = [
        i for i in await listed(client, tenant, customer="c1", period_start_gte="2026-12-01T00:00:00Z")
    ]
    base_fee = PRICES[currency][0]
    assert december["total"] == base_fee
    assert december["credits_applied"] == min(base_fee, total // 2)
    assert december["amount_due"] == base_fee - december["credits_applied"]
    assert [p["amount"] for p in december["payments"]] == (
        [december["amount_due"]] if december["amount_due"] else []
    )


@CURRENCIES
async def test_voiding_an_invoice_gives_its_credit_back(
    client: httpx.AsyncClient, tenant: TenantHandle, currency: str
) -> None:
    await billed_customer(client, tenant, currency)
    lines = expected_lines(currency)
    first = await grant(client, tenant, "c1", amount=lines[0][2], priority=1)
    second = await grant(client, tenant, "c1", amount=lines[1][2] // 2, priority=2)
    await run(client, tenant, NOVEMBER_CLOSED)
    invoice = await november(client, tenant)
    assert invoice["credits_applied"] == first["amount"] + second["amount"]
    assert (await act(client, tenant, invoice["id"], "void"))["status"] == "void"
    for made in (first, second):
        after = await get_grant(client, tenant, made["id"])
        assert (after["status"], after["available"]) == ("active", made["amount"])
    entries = await ledger(client, tenant, "c1")
    assert [(e["type"], e["credit_grant"], e["amount"]) for e in entries[:2]] == [
        ("restored", second["id"], second["amount"]),
        ("restored", first["id"], first["amount"]),
    ]
    assert_ledger_consistent(entries, first["amount"] + second["amount"])
    (shown,) = (await balance(client, tenant, "c1"))["balances"]
    assert shown["available"] == first["amount"] + second["amount"]


@CURRENCIES
async def test_a_negative_total_becomes_a_grant_the_next_invoice_uses(
    client: httpx.AsyncClient, tenant: TenantHandle, currency: str
) -> None:
    await billed_customer(client, tenant, currency)
    total = sum(amount for _, _, amount in expected_lines(currency))
    refund = total + 1234
    item = {"customer": "c1", "description": "Goodwill", "amount": -refund}
    await call(client, tenant, "/v1/invoice-items", item, status=201)
    await run(client, tenant, NOVEMBER_CLOSED)
    invoice = await november(client, tenant)
    assert (invoice["total"], invoice["amount_due"], invoice["status"]) == (-1234, 0, "paid")
    (made,) = (await call(client, tenant, "/v1/credit-grants", method="GET"))["data"]
    expected = {
        "name": f"Credit from {invoice['number']}",
        "amount": 1234,
        "available": 1234,
        "currency": currency,
    }
    assert {key: made[key] for key in expected} == expected
    assert (made["category"], made["priority"], made["expires_at"], made["status"]) == (
        "promotional",
        0,
        None,
        "active",
    )
    await run(client, tenant, DECEMBER_CLOSED)
    (december,) = await listed(client, tenant, customer="c1", period_start_gte="2026-12-01T00:00:00Z")
    base_fee = PRICES[currency][0]
    assert december["credits_applied"] == min(1234, base_fee)
    assert december["amount_due"] == base_fee - min(1234, base_fee)


@pytest.mark.postgres_only
async def test_concurrent_finalizations_never_spend_the_same_credit_twice(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await customer(client, tenant, "c1")
    await grant(client, tenant, "c1", amount=1500)
    drafts = []
    for n in range(6):
        body = {
            "customer": "c1",
            "items": [{"description": f"Work {n}", "amount": 1000}],
            "auto_finalize": False,
        }
        drafts.append(await call(client, tenant, "/v1/invoices", body, status=201))
    assert [d["credits_applied"] for d in drafts] == [1000, 1000, 1000, 1000, 1000, 1000]  # previews
    finance = tenant.headers(Scope.FINANCE)
    responses = await asyncio.gather(
        *(client.post(f"/v1/invoices/{d['id']}/finalize", headers=finance) for d in drafts),
        client.post(
            "/v1/customers/c1/credit-grants",
            headers=tenant.headers(),
            json={"name": "Meanwhile", "category": "promotional", "amount": 250, "priority": 90},
        ),
    )
    assert sorted(r.status_code for r in responses) == [200] * 6 + [201], [r.text for r in responses]
    finalized = [r.json() for r in responses[:6]]
    spent = sum(i["credits_applied"] for i in finalized)
    assert 1500 <= spent <= 1750
    assert all(i["amount_due"] == 1000 - i["credits_applied"] for i in finalized)
    entries = await ledger(client, tenant, "c1")
    assert -sum(e["amount"] for e in entries if e["type"] == "applied") == spent
    assert_ledger_consistent(entries, 1750 - spent)
