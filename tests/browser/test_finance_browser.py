"""The finance pages in a real browser, on the demo tenant: log in, filter, open an invoice,
finalize a draft, void one, export CSV, the overview charts, escaped markup, refused forms, log out.

Each test starts in a fresh browser profile and leaves a screenshot of each step in
``test-artifacts/screenshots/``. The tests share one demo server, so each one picks the invoices
it needs from the API at its start and asserts only what it changed itself.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from billing.core.clock import SystemClock, format_timestamp
from billing.core.money import format_money
from tests.browser.conftest import DemoServer, Screenshots, Watch

XSS_NAME = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


# --- helpers --------------------------------------------------------------------------------


def log_in(page: Page, key: str, path: str = "/finance/invoices") -> None:
    """Open ``path`` without a session, get the login form, log in and land on ``path``."""
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/finance/login\?next="))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))


def listed(api: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    """Every invoice the API lists for these filters, newest first."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {**filters, "limit": 100}
    while True:
        response = api.get("/v1/invoices", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["data"]
        if not body["has_more"]:
            return found
        params["starting_after"] = body["data"][-1]["id"]


def one_invoice(api: httpx.Client, *statuses: str) -> dict[str, Any]:
    """The newest invoice in the first of ``statuses`` that has one (earlier tests use some up)."""
    for status in statuses:
        invoices = listed(api, status=status)
        if invoices:
            return invoices[0]
    raise AssertionError(f"the demo data has no invoice that is {' or '.join(statuses)}")


def status_of(api: httpx.Client, invoice_id: str) -> str:
    response = api.get(f"/v1/invoices/{invoice_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def list_rows(page: Page) -> Any:
    return page.locator("table.invoices tbody tr")


# --- flows ----------------------------------------------------------------------------------


def test_a_finance_key_logs_in_through_the_form_and_sees_the_invoice_list(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots
) -> None:
    page.goto("/finance/invoices")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shots.take(page, "1-login-form")

    log_in(page, demo_server.finance_key)
    total = len(listed(api))
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name=f"{total} invoices")).to_be_visible()
    expect(list_rows(page)).to_have_count(min(total, 50))
    expect(page.locator(".who")).to_contain_text("finance key")
    shots.take(page, "2-invoice-list")


@pytest.mark.parametrize("status", ["open", "paid"])
def test_filtering_by_status_lists_only_invoices_of_that_status(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots, status: str
) -> None:
    log_in(page, demo_server.finance_key)
    page.get_by_label("Status").select_option(status)
    page.get_by_role("button", name="Filter").click()

    expect(page).to_have_url(re.compile(rf"status={status}"))
    expected = listed(api, status=status)
    assert expected, f"the demo data has no {status} invoice"
    expect(list_rows(page)).to_have_count(min(len(expected), 50))
    # Each row's status badge (an open invoice past its due date has an "overdue" one beside it).
    badges = page.locator("table.invoices tbody .badge:not(.overdue)").all_inner_texts()
    assert set(badges) == {status}
    shown = page.locator("table.invoices tbody td:first-child a").all_inner_texts()
    assert shown == [invoice["number"] for invoice in expected][:50]
    expect(page.get_by_label("Status")).to_have_value(status)
    shots.take(page, "list")


def test_an_invoice_opens_from_the_list_with_its_lines(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots
) -> None:
    invoice = one_invoice(api, "paid")
    log_in(page, demo_server.finance_key, "/finance/invoices?status=paid")
    page.get_by_role("link", name=invoice["number"], exact=True).click()

    expect(page).to_have_url(re.compile(rf"/finance/invoices/{invoice['id']}$"))
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text(invoice["number"])
    expect(heading.locator(".badge")).to_have_text("paid")
    expect(page.locator("table.lines > tbody > tr")).to_have_count(len(invoice["lines"]))
    total = page.locator("dl.facts > div").filter(has=page.get_by_text("Total", exact=True)).locator("dd")
    expect(total).to_have_text(format_money(invoice["total"], invoice["currency"]))
    expect(page.locator("dl.facts code")).to_have_text(invoice["id"])
    payments = page.locator("table.payments > tbody > tr .badge")
    expect(payments).to_have_count(len(invoice["payments"]))
    assert payments.all_inner_texts() == [payment["status"] for payment in invoice["payments"]]
    shots.take(page, "invoice")


def test_a_draft_is_finalized_through_its_confirm_page(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots
) -> None:
    draft = one_invoice(api, "draft")
    log_in(page, demo_server.finance_key, f"/finance/invoices/{draft['id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("(draft)")
    shots.take(page, "1-draft")

    page.get_by_role("link", name="Finalize").click()
    expect(page.get_by_role("heading", name=re.compile(r"Finalize invoice"))).to_be_visible()
    expect(page.get_by_text("freezes its lines")).to_be_visible()
    shots.take(page, "2-confirm")
    assert status_of(api, draft["id"]) == "draft", "the confirm page alone changed the invoice"

    page.get_by_role("button", name="Finalize").click()
    expect(page.get_by_role("status")).to_have_text("The invoice is finalized.")
    finalized = api.get(f"/v1/invoices/{draft['id']}").json()
    assert finalized["status"] in ("open", "paid")
    assert finalized["number"]
    expect(page.get_by_role("heading", level=1)).to_contain_text(finalized["number"])
    audit = page.locator("section[aria-labelledby=audit-title] li").last
    expect(audit).to_contain_text("by finance key")
    shots.take(page, "3-finalized")


def test_an_invoice_is_voided_after_its_warning(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots
) -> None:
    invoice = one_invoice(api, "open", "draft")
    log_in(page, demo_server.finance_key, f"/finance/invoices/{invoice['id']}")
    page.get_by_role("link", name="Void").click()
    expect(page.get_by_text("This cannot be undone.")).to_be_visible()
    shots.take(page, "1-confirm")

    page.get_by_role("button", name="Void").click()
    expect(page.get_by_role("status")).to_have_text("The invoice is void.")
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("void")
    expect(page.locator(".actions")).to_have_count(0)
    assert status_of(api, invoice["id"]) == "void"
    shots.take(page, "2-voided")


@pytest.mark.parametrize("status", ["paid", ""], ids=["paid", "all"])
def test_the_exported_csv_is_byte_for_byte_the_api_export(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots, status: str
) -> None:
    log_in(page, demo_server.finance_key)
    if status:
        page.get_by_label("Status").select_option(status)
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(rf"status={status}"))
    shots.take(page, "list")

    with page.expect_download() as started:
        page.get_by_role("link", name="Export CSV").click()
    download = started.value
    assert download.failure() is None
    assert download.suggested_filename == "invoices.csv"
    exported = download.path().read_bytes()

    from_api = api.get("/v1/invoices/export.csv", params={"status": status} if status else None)
    assert from_api.status_code == 200, from_api.text
    assert exported == from_api.content
    rows = exported.decode().splitlines()
    assert rows[0].startswith("invoice_id,number,status,")
    assert len(rows) > len(listed(api, **({"status": status} if status else {})))
    if status:
        assert {row.split(",")[2] for row in rows[1:]} == {status}


def test_the_overview_charts_render_with_bars(
    page: Page, demo_server: DemoServer, shots: Screenshots
) -> None:
    log_in(page, demo_server.finance_key, "/finance/overview")
    charts = page.locator("main svg.chart-svg")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 3, "revenue, recovery and usage charts"
    for chart in charts.all():
        expect(chart).to_be_visible()
        expect(chart).to_have_attribute("role", "img")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
    revenue_bars = page.locator("#revenue-USD-figure svg rect.bar")
    assert revenue_bars.count() > 0
    sizes = [bar.bounding_box() for bar in revenue_bars.all()]
    assert any(s is not None and s["height"] > 1 and s["width"] > 1 for s in sizes), "no bar is drawn"
    expect(revenue_bars.first.locator("title")).to_contain_text("$")
    shots.take(page, "overview")


@pytest.mark.browser_context(bypass_csp=True)  # only the escaping stands between the name and a script
def test_a_customer_name_with_markup_is_shown_as_text_and_never_runs(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots
) -> None:
    customer = _customer_with_an_invoice(api, XSS_NAME)
    log_in(page, demo_server.finance_key, f"/finance/invoices?customer={customer['external_id']}")
    # One invoice row per ended period: two when the 40 days span two month ends.
    name_link = page.get_by_role("link", name=XSS_NAME, exact=True).first
    expect(name_link).to_be_visible()
    _assert_nothing_ran(page)
    shots.take(page, "1-list")

    page.locator("table.invoices tbody td:first-child a").first.click()
    expect(page.locator("dl.facts").get_by_text(XSS_NAME, exact=True)).to_be_visible()
    _assert_nothing_ran(page)
    shots.take(page, "2-invoice")

    page.locator("dl.facts").get_by_role("link", name=XSS_NAME).click()
    expect(page.get_by_text(XSS_NAME).first).to_be_visible()
    _assert_nothing_ran(page)
    shots.take(page, "3-customer")


def _customer_with_an_invoice(api: httpx.Client, name: str) -> dict[str, Any]:
    external_id = f"xss-{uuid.uuid4().hex[:8]}"
    body = {"external_id": external_id, "name": name, "default_payment_method": "pm_card_visa"}
    customer = api.post("/v1/customers", json=body)
    assert customer.status_code == 201, customer.text
    # the server runs on the wall clock, like the demo data it serves
    starts_at = format_timestamp(SystemClock().now() - timedelta(days=40))
    subscription = api.post(
        "/v1/subscriptions", json={"customer": external_id, "plan": "starter", "starts_at": starts_at}
    )
    assert subscription.status_code == 201, subscription.text
    assert api.post("/v1/billing/run", json={"at": None}).status_code == 200
    assert listed(api, customer=external_id), "the billing run made no invoice"
    return customer.json()


def _assert_nothing_ran(page: Page) -> None:
    page.wait_for_load_state("load")  # an <img onerror> would have fired by now
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main script, main img[onerror]").count() == 0


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots, watch: Watch
) -> None:
    invoice = one_invoice(api, "open", "draft")
    log_in(page, demo_server.finance_key, f"/finance/invoices/{invoice['id']}/void")
    token = page.locator("main form input[name=csrf_token]")
    expect(token).to_have_count(1)
    token.evaluate("input => input.remove()")
    expect(token).to_have_count(0)

    watch.allow_error(r"status of 403")
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        page.get_by_role("button", name="Void").click()
    assert answered.value.status == 403
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    assert status_of(api, invoice["id"]) == invoice["status"]
    shots.take(page, "refused")


def test_logging_out_sends_the_invoice_list_back_to_the_login_form(
    page: Page, demo_server: DemoServer, shots: Screenshots
) -> None:
    log_in(page, demo_server.finance_key)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/finance/login$"))
    assert not [c for c in page.context.cookies() if c["name"] == "billing_finance"]
    shots.take(page, "1-logged-out")

    page.goto("/finance/invoices")
    expect(page).to_have_url(re.compile(r"/finance/login\?next=%2Ffinance%2Finvoices$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shots.take(page, "2-invoices-asks-for-login")


# --- an invoice with discount, tax, credits and a credit note, at phone width ----------------------

PHONE = {"width": 375, "height": 812}


def _post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def _credited_invoice(api: httpx.Client) -> dict[str, Any]:
    """A new customer's finalized invoice with a 15% coupon, 19% VAT, a $20.00 promotional grant,
    and a $5.00 credit note: every row of the totals table."""
    suffix = uuid.uuid4().hex[:8]
    vat = _post(api, "/v1/tax-rates", {"display_name": "VAT", "percentage": "19", "inclusive": False})
    external_id = f"phone-{suffix}"
    _post(
        api,
        "/v1/customers",
        {"external_id": external_id, "name": "Phone Width GmbH", "tax_rates": [vat["id"]]},
    )
    _post(
        api,
        "/v1/coupons",
        {"code": f"PHONE{suffix}", "name": "Phone", "percent_off": "15", "duration": "forever"},
    )
    _post(api, f"/v1/customers/{external_id}/discounts", {"coupon": f"PHONE{suffix}"})
    grant = {"name": "Prepaid", "amount": 2000, "currency": "USD", "category": "promotional"}
    _post(api, f"/v1/customers/{external_id}/credit-grants", grant)
    items = [
        {"description": "Implementation services for the data warehouse migration", "amount": 125000},
        {"description": "Premium support", "amount": 4999},
    ]
    draft = _post(api, "/v1/invoices", {"customer": external_id, "items": items})
    invoice = _post(api, f"/v1/invoices/{draft['id']}/finalize", {})
    assert invoice["status"] == "open" and invoice["credits_applied"] == 2000, invoice
    _post(
        api,
        f"/v1/invoices/{invoice['id']}/credit-notes",
        {"amount": 500, "reason": "other", "refund": "none"},
    )
    response = api.get(f"/v1/invoices/{invoice['id']}")
    assert response.status_code == 200, response.text
    credited: dict[str, Any] = response.json()
    return credited


def _assert_within_width(page: Page, width: int) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow}px wide, wider than the {width}px screen"


def test_an_invoice_with_discount_tax_credits_and_credit_notes_fits_a_phone(
    page: Page, demo_server: DemoServer, api: httpx.Client, shots: Screenshots
) -> None:
    invoice = _credited_invoice(api)
    money = {
        name: format_money(invoice[name], "USD") for name in ("subtotal", "tax_total", "total", "amount_due")
    }
    log_in(page, demo_server.finance_key, f"/finance/invoices/{invoice['id']}")
    for header in ("Discount", "Tax"):
        expect(page.locator("table.lines thead th", has_text=header)).to_be_visible()
    shots.take(page, "1-desktop")

    page.set_viewport_size(PHONE)
    page.reload()
    _assert_within_width(page, PHONE["width"])
    summary = page.locator("table.summary")
    expected = {
        "subtotal": money["subtotal"],
        "discount_total": "\N{MINUS SIGN}" + format_money(invoice["discount_total"], "USD"),
        "tax": money["tax_total"],
        "total": money["total"],
        "credits_applied": "\N{MINUS SIGN}" + format_money(invoice["credits_applied"], "USD"),
        "pre_payment_credit_notes_amount": "\N{MINUS SIGN}" + format_money(500, "USD"),
        "amount_due": money["amount_due"],
    }
    for name, text in expected.items():
        cell = summary.locator(f"tr[data-figure={name}] td")
        expect(cell).to_have_text(text)
        cell.scroll_into_view_if_needed()
        expect(cell).to_be_in_viewport(ratio=1)  # whole, not cut off at the right edge
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], name
    for line in page.locator("table.lines > tbody > tr").all():
        for label in ("Amount", "Discount", "Tax"):
            cell = line.locator(f'td[data-label="{label}"]')
            expect(cell).to_be_visible()
            box = cell.bounding_box()
            assert box is not None and box["x"] + box["width"] <= PHONE["width"], label
    note = page.locator("table.credit-notes > tbody > tr")
    expect(note).to_have_count(1)
    expect(note.locator('td[data-label="Total"]')).to_contain_text(format_money(500, "USD"))
    shots.take(page, "2-phone")
