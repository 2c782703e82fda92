"""One invoice's figures wherever they are shown: the API (one invoice and the list), the upcoming
preview, the draft, the CSV export (API and finance page), the finance invoice page and the
payload of ``invoice.finalized``, in USD, JPY and KWD.

The invoice has a base fee, usage and an invoice item, a percent-off coupon, an exclusive tax
rate, a promotional credit grant covering part of it and, once finalized, a credit note. Every
figure is checked against the small Decimal oracle below (API.md "Invoice computation"), never
against billing/.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

from billing import jobs
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import TenantHandle, listening
from tests.finance_browser import FinanceBrowser
from tests.integration.invoicing.test_invoice_lifecycle import call, get_invoice, listed, run, send

MakeTenant = Callable[..., Awaitable[TenantHandle]]
EXPONENT = {"USD": 2, "JPY": 0, "KWD": 3}
START = datetime(2026, 1, 1, tzinfo=UTC)
BASE_FEE = 4999  # minor units, in every currency
UNIT = Decimal("0.0137")  # major units per unit
QUANTITY = Decimal("1234.5")
ITEM = 777
PERCENT_OFF = Decimal("12.5")
TAX = Decimal("8.25")
FIGURES = (
    "subtotal",
    "discount_total",
    "tax_total",
    "total",
    "credits_applied",
    "credit_notes",
    "amount_due",
)

# --- oracle ---------------------------------------------------------------------------------------


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Expected:
    amounts: dict[str, int]  # by line kind
    discounts: dict[str, int]
    taxes: dict[str, int]
    figures: dict[str, int]


def oracle(currency: str, *, grant: int, credit_notes: int = 0) -> Expected:
    """Lines, the discount spread by largest remainder (ties to the earlier line), tax per line on
    its net, credits up to the total, and what is left due."""
    usage = half_up(QUANTITY * UNIT * Decimal(10) ** EXPONENT[currency])
    amounts = {"base_fee": BASE_FEE, "usage": usage, "invoice_item": ITEM}
    eligible = sum(amounts.values())
    discount = half_up(Decimal(eligible) * PERCENT_OFF / 100)
    exact = {kind: Decimal(discount) * amount / eligible for kind, amount in amounts.items()}
    shares = {kind: int(value.to_integral_value(rounding=ROUND_FLOOR)) for kind, value in exact.items()}
    order = list(amounts)
    by_remainder = sorted(order, key=lambda kind: (-(exact[kind] - shares[kind]), order.index(kind)))
    for kind in by_remainder[: discount - sum(shares.values())]:
        shares[kind] += 1
    taxes = {kind: half_up((amount - shares[kind]) * TAX / 100) for kind, amount in amounts.items()}
    total = eligible - discount + sum(taxes.values())
    credits = min(grant, total)
    figures = {
        "subtotal": eligible,
        "discount_total": discount,
        "tax_total": sum(taxes.values()),
        "total": total,
        "credits_applied": credits,
        "credit_notes": credit_notes,
        "amount_due": total - credits - credit_notes,
    }
    return Expected(amounts, shares, taxes, figures)


# --- what each place shows ------------------------------------------------------------------------


def of_api(invoice: dict[str, Any]) -> dict[str, int]:
    shown = {name: invoice[name] for name in FIGURES if name != "credit_notes"}
    notes = invoice["pre_payment_credit_notes_amount"] + invoice["post_payment_credit_notes_amount"]
    return shown | {"credit_notes": notes}


def lines_of_api(invoice: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """(amount, discount, tax) by kind, the discount line aside."""
    return {
        line["kind"]: (
            line["amount"],
            sum(share["amount"] for share in line["discount_amounts"]),
            sum(tax["amount"] for tax in line["tax_amounts"]),
        )
        for line in invoice["lines"]
        if line["kind"] != "discount"
    }


def expected_lines(expected: Expected) -> dict[str, tuple[int, int, int]]:
    return {
        kind: (amount, expected.discounts[kind], expected.taxes[kind])
        for kind, amount in expected.amounts.items()
    }


CSV_FIGURES = {
    "subtotal": "invoice_subtotal",
    "discount_total": "discount_total",
    "tax_total": "tax_total",
    "total": "invoice_total",
    "credits_applied": "credits_applied",
    "credit_notes": "credit_notes_amount",
    "amount_due": "amount_due",
}


def of_csv(text: str, invoice_id: str) -> tuple[dict[str, int], dict[str, tuple[int, int, int]]]:
    """The invoice's figures (the same on each of its rows) and its lines' amounts by kind."""
    rows = [row for row in csv.DictReader(io.StringIO(text)) if row["invoice_id"] == invoice_id]
    assert rows
    figures = {tuple(int(row[column]) for column in CSV_FIGURES.values()) for row in rows}
    (one,) = figures
    lines = {
        row["kind"]: (int(row["amount"]), int(row["discount"]), int(row["tax"]))
        for row in rows
        if row["kind"] != "discount"
    }
    return dict(zip(CSV_FIGURES, one, strict=True)), lines


def minor(text: str, currency: str) -> int:
    """A shown amount ("$1,234.56", "KWD1.500", a minus sign before a deduction, an en dash for
    none) in minor units."""
    plain = html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
    if plain in ("", "\N{EN DASH}"):
        return 0
    sign = -1 if plain.startswith("\N{MINUS SIGN}") else 1
    digits = re.sub(r"[^0-9.]", "", plain)
    return sign * int(Decimal(digits).scaleb(EXPONENT[currency]))


def of_page(page: str, currency: str) -> dict[str, int]:
    """The figures of the totals table beside the lines (discount and credits shown negative)."""
    rows = re.findall(r'<tr data-figure="(\w+)"[^>]*><th[^>]*>.*?</th><td class="num">(.*?)</td></tr>', page)
    found: dict[str, int] = {}
    for name, cell in rows:
        found[name] = found.get(name, 0) + minor(cell, currency)
    return {
        "subtotal": found["subtotal"],
        "discount_total": -found.get("discount_total", 0),
        "tax_total": found.get("tax_total", found.get("tax", 0)),
        "total": found["total"],
        "credits_applied": -found.get("credits_applied", 0),
        "credit_notes": -found.get("pre_payment_credit_notes_amount", 0)
        + found.get("post_payment_credit_notes_amount", 0),
        "amount_due": found["amount_due"],
    }


def lines_of_page(page: str, currency: str) -> dict[str, tuple[int, int, int]]:
    body = page[page.index('<table class="lines') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    lines = {}
    for kind, row in re.findall(r'<tr class="(\w+)">(.*?)</tr>', body, flags=re.S):
        cells = dict(re.findall(r'<td class="num" data-label="(\w+)">(.*?)</td>', row, flags=re.S))
        if kind != "discount":
            lines[kind] = tuple(
                abs(minor(cells[label].split("<span")[0], currency))
                for label in ("Amount", "Discount", "Tax")
            )
    return lines


# --- the story ------------------------------------------------------------------------------------


async def billed_customer(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> tuple[TenantHandle, int]:
    """Customer c1 on plan pro from START, taxed, discounted, with usage and a pending item, and
    a grant of a third of the oracle's total; the clock on 20 January."""
    clock.set(START)
    tenant = await make_tenant(currency=currency)
    await call(client, tenant, "/v1/meters", {"key": "units", "aggregation": "sum"}, status=201)
    price = {"meter": "units", "model": "per_unit", "unit_amount": str(UNIT)}
    await call(
        client, tenant, "/v1/plans", {"code": "pro", "base_fee": BASE_FEE, "prices": [price]}, status=201
    )
    rate = await call(
        client,
        tenant,
        "/v1/tax-rates",
        {"display_name": "Sales tax", "percentage": str(TAX), "inclusive": False},
        status=201,
    )
    customer = {"external_id": "c1", "timezone": "UTC", "tax_rates": [rate["id"]]}
    await call(client, tenant, "/v1/customers", customer, status=201)
    coupon = {"code": "SPRING", "percent_off": str(PERCENT_OFF), "duration": "forever"}
    await call(client, tenant, "/v1/coupons", coupon, status=201)
    await call(client, tenant, "/v1/customers/c1/discounts", {"coupon": "SPRING"}, status=201)
    subscription = {"customer": "c1", "plan": "pro", "starts_at": "2026-01-01T00:00:00Z"}
    await call(client, tenant, "/v1/subscriptions", subscription, status=201)
    grant = oracle(currency, grant=0).figures["total"] // 3
    body = {"name": "Prepaid", "amount": grant, "currency": currency, "category": "promotional"}
    await call(client, tenant, "/v1/customers/c1/credit-grants", body, status=201)
    item = {"customer": "c1", "description": "Setup", "amount": ITEM, "currency": currency}
    await call(client, tenant, "/v1/invoice-items", item, status=201)
    clock.set(datetime(2026, 1, 20, tzinfo=UTC))
    await send(client, tenant, ("e1", "c1", "2026-01-10T00:00:00Z", str(QUANTITY)))
    return tenant, grant


async def finance_page(client: httpx.AsyncClient, tenant: TenantHandle, invoice_id: str) -> str:
    """The invoice page, logged in with the finance key the first time."""
    response = await client.get(f"/finance/invoices/{invoice_id}")
    if response.status_code == 303:
        assert (await FinanceBrowser(client).log_in(tenant.keys[Scope.FINANCE])).status_code == 303
        response = await client.get(f"/finance/invoices/{invoice_id}")
    assert response.status_code == 200, response.text
    return response.text


async def exported(client: httpx.AsyncClient, tenant: TenantHandle) -> str:
    response = await client.get(
        "/v1/invoices/export.csv", headers=tenant.headers(Scope.FINANCE), params={"customer": "c1"}
    )
    assert response.status_code == 200, response.text
    return response.text


async def assert_shown_everywhere(
    client: httpx.AsyncClient, tenant: TenantHandle, invoice_id: str, expected: Expected, currency: str
) -> None:
    lines = expected_lines(expected)
    invoice = await get_invoice(client, tenant, invoice_id)
    assert (of_api(invoice), lines_of_api(invoice)) == (expected.figures, lines)
    (in_list,) = await listed(client, tenant, customer="c1")
    assert (of_api(in_list), lines_of_api(in_list)) == (expected.figures, lines)
    text = await exported(client, tenant)
    assert of_csv(text, invoice_id) == (expected.figures, lines)
    page = await finance_page(client, tenant, invoice_id)
    assert of_page(page, currency) == expected.figures
    assert lines_of_page(page, currency) == lines
    from_page = await client.get("/finance/invoices/export.csv", params={"customer": "c1"})
    assert from_page.text == text


@pytest.mark.parametrize("currency", list(EXPONENT))
async def test_one_invoice_shows_the_same_figures_everywhere(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, ctx: AppContext, currency: str
) -> None:
    tenant, grant = await billed_customer(client, make_tenant, clock, currency)
    expected = oracle(currency, grant=grant)
    assert 0 < expected.figures["credits_applied"] < expected.figures["total"]  # a partial grant
    assert all(expected.discounts.values()) and all(expected.taxes.values())

    upcoming = await call(client, tenant, "/v1/customers/c1/upcoming-invoice", method="GET")
    assert (of_api(upcoming), lines_of_api(upcoming)) == (expected.figures, expected_lines(expected))

    with listening({"invoice.finalized"}) as finalized:
        await run(client, tenant, "2026-02-01T00:00:00Z")
        (draft,) = await listed(client, tenant, customer="c1")
        assert draft["status"] == "draft"
        await assert_shown_everywhere(client, tenant, draft["id"], expected, currency)

        clock.set(datetime(2026, 2, 1, 1, tzinfo=UTC))
        opened = await call(client, tenant, f"/v1/invoices/{draft['id']}/finalize", scope=Scope.FINANCE)
        assert opened["status"] == "open"
        await assert_shown_everywhere(client, tenant, draft["id"], expected, currency)
        await jobs.dispatch_outbox(ctx)
    (message,) = finalized
    snapshot = message.payload["object"]
    assert (of_api(snapshot), lines_of_api(snapshot)) == (expected.figures, expected_lines(expected))
    assert snapshot == await get_invoice(client, tenant, draft["id"])

    note_total = expected.figures["total"] // 5
    body = {"amount": note_total, "reason": "order_change", "refund": "none"}
    note = await call(client, tenant, f"/v1/invoices/{draft['id']}/credit-notes", body, status=201)
    assert (note["total"], note["pre_payment_amount"], note["post_payment_amount"]) == (
        note_total,
        note_total,
        0,
    )
    credited = oracle(currency, grant=grant, credit_notes=note_total)
    assert credited.figures["amount_due"] > 0
    await assert_shown_everywhere(client, tenant, draft["id"], credited, currency)
    page = await finance_page(client, tenant, draft["id"])
    (row,) = re.findall(rf'<tr data-credit-note="{note["id"]}">(.*?)</tr>', page, flags=re.S)
    assert note["number"] in row and "order change" in row
    (shown_total,) = re.findall(r'data-label="Total">(.*?)<', row)
    assert minor(shown_total, currency) == note_total
    net = re.search(
        r'<tr data-figure="net_of_credit_notes"><th[^>]*>.*?</th><td class="num">(.*?)</td>', page
    )
    assert net is not None and minor(net.group(1), currency) == credited.figures["total"] - note_total
