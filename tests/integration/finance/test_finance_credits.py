"""Credit notes, credits, discounts and tax on the finance pages: revenue net of credit notes on
the overview, the invoice list's sums, a paid invoice's credit notes after payment, and a
customer's credit balance, discount and tax status. Expected figures are worked out here from the
amounts the tests put in."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.finance_browser import FinanceBrowser
from tests.integration.credit_notes.test_credit_notes import issue, open_invoice, paid_invoice
from tests.integration.finance.test_finance_overview import table, usd
from tests.integration.invoicing.test_invoice_lifecycle import call, get_invoice

OPEN_ITEMS = (1000, 2345)
PAID_ITEMS = (5000,)


@pytest.fixture
async def browser(client: httpx.AsyncClient, tenant: TenantHandle) -> FinanceBrowser:
    page = FinanceBrowser(client)
    response = await page.log_in(tenant.keys[Scope.FINANCE])
    assert response.status_code == 303, response.text
    return page


@pytest.fixture
async def credited(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, Any]:
    """In November (the clock's month): c1's open invoice with a $10.00 note before payment, and
    c2's paid invoice with $12.00 refunded to the card and $8.00 to the credit balance."""
    opened = await open_invoice(client, tenant, *OPEN_ITEMS, external_id="c1")
    before = await issue(client, tenant, opened["id"], amount=1000)
    paid = await paid_invoice(client, tenant, *PAID_ITEMS, external_id="c2")
    refunded = await issue(client, tenant, paid["id"], amount=1200, refund="provider")
    to_balance = await issue(client, tenant, paid["id"], amount=800, refund="credit_balance")
    return {
        "open": await get_invoice(client, tenant, opened["id"]),
        "paid": await get_invoice(client, tenant, paid["id"]),
        "notes": [before, refunded, to_balance],
    }


def figure(page: str, name: str) -> str:
    found = re.search(rf'<tr data-figure="{name}"[^>]*><th[^>]*>.*?</th><td class="num">(.*?)</td>', page)
    assert found is not None, name
    return re.sub(r"<[^>]+>", "", found.group(1))


async def test_the_overview_counts_revenue_net_of_credit_notes(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, credited: dict[str, Any]
) -> None:
    invoiced = sum(OPEN_ITEMS) + sum(PAID_ITEMS) - (1000 + 1200 + 800)
    paid = sum(PAID_ITEMS)
    refunds = credited["paid"]["refunds"]
    assert [(r["amount"], r["status"]) for r in refunds] == [(1200, "succeeded")]
    rows = table((await browser.get("/finance/overview")).text, "revenue")
    assert rows == [["2026-11", usd(invoiced), usd(paid), usd(1200), usd(paid - 1200)]]
    assert rows[0][1] == "$53.45"


async def test_the_invoice_list_sums_totals_credits_and_credit_notes_per_status(
    browser: FinanceBrowser, credited: dict[str, Any]
) -> None:
    page = (await browser.get("/finance/invoices")).text
    assert "Total is the sum of the invoices' totals, after discounts and with tax" in page
    rows = table(page, "totals")
    assert rows == [
        ["open", "USD", "1", usd(sum(OPEN_ITEMS)), usd(0), usd(1000), usd(0), usd(sum(OPEN_ITEMS) - 1000)],
        ["paid", "USD", "1", usd(sum(PAID_ITEMS)), usd(0), usd(2000), usd(sum(PAID_ITEMS)), usd(0)],
    ]


async def test_a_paid_invoice_shows_its_credit_notes_after_payment_by_refund_kind(
    browser: FinanceBrowser, credited: dict[str, Any]
) -> None:
    paid = credited["paid"]
    assert (paid["post_payment_credit_notes_amount"], paid["amount_due"]) == (2000, 0)
    page = (await browser.get(f"/finance/invoices/{paid['id']}")).text
    assert figure(page, "post_payment_credit_notes_amount") == usd(2000)
    assert figure(page, "post_payment_provider") == usd(1200)
    assert figure(page, "post_payment_credit_balance") == usd(800)
    assert 'data-figure="post_payment_none"' not in page
    assert figure(page, "net_of_credit_notes") == usd(sum(PAID_ITEMS) - 2000)
    assert figure(page, "amount_due") == usd(0)
    _, refunded, to_balance = credited["notes"]
    section = page[page.index('id="credit-notes-title"') :]
    rows = re.findall(r'<tr data-credit-note="(cn_\w+)">(.*?)</tr>', section, flags=re.S)
    assert [note_id for note_id, _ in rows] == [refunded["id"], to_balance["id"]]
    for (_, row), note in zip(rows, (refunded, to_balance), strict=True):
        assert note["number"] in row and usd(note["total"]) in row
        assert re.search(rf'data-label="After payment">{re.escape(usd(note["total"]))}<', row)
        assert re.search(rf'data-label="Before payment">{re.escape(usd(0))}<', row)
    assert refunded["refund_id"] in rows[0][1] and "to the payment method" in rows[0][1]
    assert to_balance["credit_grant"] in rows[1][1] and "to the credit balance" in rows[1][1]

    opened = (await browser.get(f"/finance/invoices/{credited['open']['id']}")).text
    assert figure(opened, "pre_payment_credit_notes_amount") == "\N{MINUS SIGN}" + usd(1000)
    assert figure(opened, "amount_due") == usd(sum(OPEN_ITEMS) - 1000)
    assert "post_payment_credit_notes_amount" not in opened


async def test_an_invoice_without_credit_notes_says_so(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice = await open_invoice(client, tenant, 500)
    page = (await browser.get(f"/finance/invoices/{invoice['id']}")).text
    assert "No credit note." in page and "net_of_credit_notes" not in page
    assert 'data-label="Discount"' not in page  # no discount nor tax: no columns for them


async def test_a_customer_page_shows_credit_balance_discount_and_tax_status(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, credited: dict[str, Any]
) -> None:
    rate = {"display_name": "VAT", "percentage": "19", "inclusive": False}
    vat = await call(client, tenant, "/v1/tax-rates", rate, status=201)
    patch = {
        "tax_rates": [vat["id"]],
        "address": {"country": "DE"},
        "tax_ids": [{"type": "eu_vat", "value": "DE136695976"}],
    }
    await call(client, tenant, "/v1/customers/c2", patch, method="PATCH")
    coupon = {"code": "LOYAL", "name": "Loyalty", "percent_off": "15", "duration": "forever"}
    await call(client, tenant, "/v1/coupons", coupon, status=201)
    discount = await call(client, tenant, "/v1/customers/c2/discounts", {"coupon": "LOYAL"}, status=201)
    grant = {"name": "Top-up", "amount": 2500, "currency": "USD", "category": "promotional"}
    await call(client, tenant, "/v1/customers/c2/credit-grants", grant, status=201)
    balance = await call(client, tenant, "/v1/customers/c2/credit-balance", method="GET")
    assert balance["balances"][0]["available"] == 800 + 2500  # the note's grant and the top-up

    page = " ".join((await browser.get("/finance/customers/c2")).text.split())
    credit = re.search(r'<dd class="credit-balance">(.*?)</dd>', page)
    assert credit is not None
    assert re.sub(r"<[^>]+>", "", credit.group(1)) == f"{usd(3300)} available"
    assert f'Loyalty (15% off) <span class="muted">no end · <code>{discount["id"]}</code>' in page
    assert "<dt>Tax</dt><dd>taxed: VAT 19%</dd>" in page
    assert "<dt>Tax IDs</dt><dd>EU VAT DE136695976</dd>" in page

    plain = " ".join((await browser.get("/finance/customers/c1")).text.split())
    assert '<dd class="credit-balance">none</dd>' in plain
    assert "<dt>Discount</dt><dd>none</dd>" in plain
    assert 'taxed: no rate <span class="muted">(the tenant\'s defaults)</span>' in plain.replace("&#39;", "'")
    await call(client, tenant, "/v1/customers/c1", {"tax_exempt": "reverse"}, method="PATCH")
    reverse = " ".join((await browser.get("/finance/customers/c1")).text.split())
    assert "<dt>Tax</dt><dd>reverse charge</dd>" in reverse
