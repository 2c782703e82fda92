"""The finance pages: sessions and CSRF, the invoice list with filters and totals, an invoice and
its actions, and the CSV export, through HTTP as a browser would use them."""

from __future__ import annotations

import html
from datetime import timedelta

import httpx
import pytest

from billing.core.clock import FrozenClock
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.finance_browser import FinanceBrowser
from tests.integration.invoicing.test_invoice_lifecycle import PER_UNIT, call, listed, run, send, setup


@pytest.fixture
async def invoices(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, dict]:
    """September: c1 paid $12.50, the others paid at $0. October: drafts for c1 ($0), c2 ($3)
    and c3 ($42 with a late line for September), and c4's $7 finalized by hand, still open."""
    customers = ["c1", "c2", "c3", "c4"]
    await setup(client, tenant, customers, starts_at="2026-09-01T00:00:00Z", prices=PER_UNIT)
    await call(client, tenant, "/v1/customers/c1", {"default_payment_method": "pm_card_visa"}, method="PATCH")
    await call(client, tenant, "/v1/customers/c2", {"name": "<script>alert(1)</script>"}, method="PATCH")
    await send(client, tenant, ("e1", "c1", "2026-09-10T00:00:00Z", "12.5"))
    await run(client, tenant, "2026-10-02T00:00:00Z")
    await send(
        client,
        tenant,
        ("e2", "c2", "2026-10-10T00:00:00Z", "3"),
        ("e3", "c3", "2026-10-11T00:00:00Z", "40"),
        ("late", "c3", "2026-09-20T00:00:00Z", "2"),
        ("e4", "c4", "2026-10-12T00:00:00Z", "7"),
    )
    await run(client, tenant, "2026-11-01T00:00:00Z")
    by_key = {f"{i['customer_external_id']}-{i['period_start'][:7]}": i for i in await listed(client, tenant)}
    c4 = by_key["c4-2026-10"]
    by_key["c4-2026-10"] = await call(
        client, tenant, f"/v1/invoices/{c4['id']}/finalize", scope=Scope.FINANCE
    )
    return by_key


@pytest.fixture
async def browser(client: httpx.AsyncClient, tenant: TenantHandle) -> FinanceBrowser:
    page = FinanceBrowser(client)
    response = await page.log_in(tenant.keys[Scope.FINANCE])
    assert response.status_code == 303, response.text
    return page


# Sessions


async def test_pages_send_a_browser_without_a_session_to_the_login_form_and_back(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    response = await client.get("/finance/invoices", params={"status": "open"})
    assert response.status_code == 303
    assert response.headers["location"] == "/finance/login?next=%2Ffinance%2Finvoices%3Fstatus%3Dopen"
    page = FinanceBrowser(client)
    logged_in = await page.log_in(tenant.keys[Scope.FINANCE], next_path="/finance/invoices?status=open")
    assert logged_in.status_code == 303
    assert logged_in.headers["location"] == "/finance/invoices?status=open"
    assert (await client.get("/finance/invoices")).status_code == 200


async def test_the_session_cookie_is_http_only_same_site_and_scoped_to_the_finance_pages(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    response = await FinanceBrowser(client).log_in(tenant.keys[Scope.ADMIN])
    cookies = [value for name, value in response.headers.multi_items() if name == "set-cookie"]
    (session,) = [c for c in cookies if c.startswith("billing_finance=")]
    attributes = {part.strip().split("=")[0].lower() for part in session.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in session.lower() and "path=/finance" in session.lower()
    assert tenant.keys[Scope.ADMIN] not in session


@pytest.mark.parametrize("key", ["ingest", "unknown", "revoked"])
async def test_only_an_active_finance_or_admin_key_logs_in(
    client: httpx.AsyncClient, tenant: TenantHandle, key: str
) -> None:
    plaintext = {"ingest": tenant.keys[Scope.INGEST], "unknown": "bk_" + "x" * 43}.get(key)
    if key == "revoked":
        plaintext = tenant.keys[Scope.FINANCE]
        await call(client, tenant, f"/v1/api-keys/{tenant.key_ids[Scope.FINANCE]}/revoke")
    response = await FinanceBrowser(client).log_in(plaintext or "")
    assert response.status_code == 401
    assert "not a finance or admin key" in response.text
    assert "billing_finance=" not in response.headers.get("set-cookie", "")
    assert (await client.get("/finance/invoices")).status_code == 303


async def test_a_login_form_without_its_token_is_refused(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await client.get("/finance/login")
    response = await client.post("/finance/login", data={"api_key": tenant.keys[Scope.FINANCE]})
    assert response.status_code == 403
    assert (await client.get("/finance/invoices")).status_code == 303


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/v1/tenant"]
)
async def test_login_never_redirects_off_the_finance_pages(
    client: httpx.AsyncClient, tenant: TenantHandle, target: str
) -> None:
    response = await FinanceBrowser(client).log_in(tenant.keys[Scope.FINANCE], next_path=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/finance"


async def test_logging_out_ends_the_session_even_for_a_copied_cookie(
    browser: FinanceBrowser, client: httpx.AsyncClient
) -> None:
    await browser.get("/finance/invoices")
    copied = client.cookies["billing_finance"]
    response = await browser.submit("/finance/logout")
    assert (response.status_code, response.headers["location"]) == (303, "/finance/login")
    assert (await client.get("/finance/invoices")).status_code == 303
    client.cookies.set("billing_finance", copied, path="/finance")
    assert (await client.get("/finance/invoices")).status_code == 303


async def test_each_login_is_its_own_session(client: httpx.AsyncClient, app, tenant: TenantHandle) -> None:
    other_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    async with other_client:
        first, second = FinanceBrowser(client), FinanceBrowser(other_client)
        for page in (first, second):
            assert (await page.log_in(tenant.keys[Scope.FINANCE])).status_code == 303
            await page.get("/finance/invoices")
        await first.submit("/finance/logout")
        assert (await client.get("/finance/invoices")).status_code == 303
        assert (await other_client.get("/finance/invoices")).status_code == 200


async def test_revoking_the_key_ends_its_sessions(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    assert (await client.get("/finance/invoices")).status_code == 200
    await call(client, tenant, f"/v1/api-keys/{tenant.key_ids[Scope.FINANCE]}/revoke")
    assert (await client.get("/finance/invoices")).status_code == 303


async def test_a_session_expires_after_eight_hours(
    browser: FinanceBrowser, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    clock.advance(timedelta(hours=8, minutes=-1))
    assert (await client.get("/finance/invoices")).status_code == 200
    clock.advance(timedelta(minutes=2))
    assert (await client.get("/finance/invoices")).status_code == 303


async def test_a_forged_session_cookie_is_ignored(client: httpx.AsyncClient) -> None:
    client.cookies.set("billing_finance", "gAAAAABforged", path="/finance")
    assert (await client.get("/finance/invoices")).status_code == 303


async def test_pages_forbid_scripts_framing_and_caching(browser: FinanceBrowser) -> None:
    response = await browser.get("/finance/invoices")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


# The invoice list


async def test_the_list_shows_every_invoice_with_totals_per_status_and_currency(
    browser: FinanceBrowser, invoices: dict[str, dict]
) -> None:
    page = (await browser.get("/finance/invoices")).text
    assert "8 invoices" in page
    for invoice in invoices.values():
        assert f'/finance/invoices/{invoice["id"]}"' in page
    assert invoices["c1-2026-09"]["number"] in page
    totals = page[page.index('<table class="totals">') : page.index("</table>")]
    rows = [" ".join(row.split()) for row in totals.split("<tr>")[2:]]
    assert any(">draft<" in row and '<td class="num">3</td>' in row and "$45.00" in row for row in rows)
    assert any(">paid<" in row and '<td class="num">4</td>' in row and "$12.50" in row for row in rows)
    assert any(">open<" in row and '<td class="num">1</td>' in row and "$7.00" in row for row in rows)


async def test_filters_narrow_the_list_and_its_totals(
    browser: FinanceBrowser, invoices: dict[str, dict]
) -> None:
    drafts = (await browser.get("/finance/invoices", status="draft")).text
    assert "3 invoices" in drafts and invoices["c1-2026-09"]["id"] not in drafts
    by_customer = (await browser.get("/finance/invoices", customer="c3")).text
    assert "2 invoices" in by_customer and invoices["c3-2026-10"]["id"] in by_customer
    by_period = (
        await browser.get("/finance/invoices", period_from="2026-10-01", period_to="2026-10-01")
    ).text
    assert "4 invoices" in by_period and invoices["c1-2026-09"]["id"] not in by_period
    by_amount = (await browser.get("/finance/invoices", total_min="12.5", total_max="40")).text
    assert "1 invoice<" in by_amount and invoices["c1-2026-09"]["id"] in by_amount
    just_above = (await browser.get("/finance/invoices", total_min="12.501")).text
    assert invoices["c1-2026-09"]["id"] not in just_above and invoices["c3-2026-10"]["id"] in just_above


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", "lost", "Choose a status"),
        ("customer", "nobody", "No customer"),
        ("period_from", "yesterday", "Use a date"),
        ("total_min", "1e400", "Use an amount"),
        ("total_max", "ten", "Use an amount"),
    ],
)
async def test_a_filter_that_does_not_parse_is_reported_and_shows_no_invoices(
    browser: FinanceBrowser, invoices: dict[str, dict], field: str, value: str, message: str
) -> None:
    response = await browser.get("/finance/invoices", **{field: value})
    assert response.status_code == 400
    assert message in response.text
    assert all(invoice["id"] not in response.text for invoice in invoices.values())


async def test_customer_supplied_text_is_escaped(browser: FinanceBrowser, invoices: dict[str, dict]) -> None:
    listing = (await browser.get("/finance/invoices")).text
    detail = (await browser.get(f"/finance/invoices/{invoices['c2-2026-10']['id']}")).text
    for page in (listing, detail):
        assert "<script>alert(1)</script>" not in page
        assert html.escape("<script>alert(1)</script>") in page


async def test_the_csv_export_of_a_filter_is_the_api_export_of_the_same_filter(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, invoices: dict[str, dict]
) -> None:
    page = await browser.get("/finance/invoices", status="draft")
    assert "/finance/invoices/export.csv?status=draft" in page.text
    exported = await client.get("/finance/invoices/export.csv", params={"status": "draft"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    api = await client.get("/v1/invoices/export.csv", params={"status": "draft"}, headers=tenant.headers())
    assert exported.text == api.text
    assert exported.text.count("\n") == 1 + 4  # header; one usage line each, and c3's late line
    refused = await client.get("/finance/invoices/export.csv", params={"total_min": "ten"})
    assert refused.status_code == 400 and "correct it on the invoice list" in refused.text


# An invoice and its actions


async def test_an_invoice_page_shows_lines_late_usage_payments_and_the_audit_trail(
    browser: FinanceBrowser, invoices: dict[str, dict]
) -> None:
    page = " ".join((await browser.get(f"/finance/invoices/{invoices['c3-2026-10']['id']}")).text.split())
    assert "late usage" in page and "2026-09-01 \u2013 2026-10-01" in page
    assert "Audit trail" in page and "by admin key “admin”" in page
    assert 'href="/finance/invoices/' + invoices["c3-2026-10"]["id"] + '/finalize"' in page
    paid = (await browser.get(f"/finance/invoices/{invoices['c1-2026-09']['id']}")).text
    assert invoices["c1-2026-09"]["number"] in paid and "succeeded" in paid and "pm_card_visa" not in paid
    assert f"by payment {invoices['c1-2026-09']['payments'][0]['id']}" in " ".join(paid.split())
    opened = (await browser.get(f"/finance/invoices/{invoices['c4-2026-10']['id']}")).text
    assert (
        "Charge now" in opened
        and "Retry charge" not in opened
        and "Mark uncollectible" in opened
        and "/finalize" not in opened
    )


async def test_finalizing_a_draft_asks_for_confirmation_then_records_who_did_it(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, invoices: dict[str, dict]
) -> None:
    invoice_id = invoices["c2-2026-10"]["id"]
    confirm = await browser.get(f"/finance/invoices/{invoice_id}/finalize")
    assert confirm.status_code == 200 and "Finalizing numbers the invoice" in confirm.text
    done = await browser.submit(f"/finance/invoices/{invoice_id}/finalize")
    assert (done.status_code, done.headers["location"]) == (
        303,
        f"/finance/invoices/{invoice_id}?done=finalize",
    )
    final = await call(client, tenant, f"/v1/invoices/{invoice_id}", method="GET")
    assert final["status"] == "open" and final["number"] is not None
    assert final["status_transitions"][-1]["actor"] == tenant.key_ids[Scope.FINANCE]
    page = (await browser.get(done.headers["location"])).text
    assert "The invoice is finalized." in page
    assert f"by finance key “finance” ({tenant.key_ids[Scope.FINANCE]})" in " ".join(page.split())


@pytest.mark.parametrize(("action", "status"), [("void", "void"), ("mark-uncollectible", "uncollectible")])
async def test_closing_actions_change_an_open_invoice(
    browser: FinanceBrowser,
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    invoices: dict[str, dict],
    action: str,
    status: str,
) -> None:
    invoice_id = invoices["c4-2026-10"]["id"]
    await browser.get(f"/finance/invoices/{invoice_id}/{action}")
    assert (await browser.submit(f"/finance/invoices/{invoice_id}/{action}")).status_code == 303
    assert (await call(client, tenant, f"/v1/invoices/{invoice_id}", method="GET"))["status"] == status


async def test_retry_charge_charges_the_open_invoice_again(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, invoices: dict[str, dict]
) -> None:
    invoice_id = invoices["c4-2026-10"]["id"]
    before = len(invoices["c4-2026-10"]["payments"])
    await call(client, tenant, "/v1/customers/c4", {"default_payment_method": "pm_card_visa"}, method="PATCH")
    await browser.get(f"/finance/invoices/{invoice_id}/pay")
    assert (await browser.submit(f"/finance/invoices/{invoice_id}/pay")).status_code == 303
    after = await call(client, tenant, f"/v1/invoices/{invoice_id}", method="GET")
    assert len(after["payments"]) == before + 1
    assert after["status"] == "paid"


async def test_a_refused_transition_is_explained_on_the_invoice_page(
    browser: FinanceBrowser, invoices: dict[str, dict]
) -> None:
    invoice_id = invoices["c2-2026-10"]["id"]
    await browser.get(f"/finance/invoices/{invoice_id}")
    response = await browser.submit(f"/finance/invoices/{invoice_id}/mark-uncollectible")
    assert response.status_code == 409
    assert "Only an open invoice can be marked uncollectible" in response.text


async def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, invoices: dict[str, dict]
) -> None:
    invoice_id = invoices["c2-2026-10"]["id"]
    for data in ({}, {"csrf_token": "forged"}):
        response = await client.post(f"/finance/invoices/{invoice_id}/void", data=data)
        assert response.status_code == 403 and "Form refused" in response.text
    assert (await call(client, tenant, f"/v1/invoices/{invoice_id}", method="GET"))["status"] == "draft"


async def test_another_tenants_invoice_is_not_found(
    client: httpx.AsyncClient, make_tenant, invoices: dict[str, dict]
) -> None:
    other = await make_tenant(name="Other")
    page = FinanceBrowser(client)
    await page.log_in(other.keys[Scope.FINANCE])
    invoice_id = invoices["c1-2026-09"]["id"]
    assert (await page.get(f"/finance/invoices/{invoice_id}")).status_code == 404
    await page.get("/finance/invoices")
    assert (await page.submit(f"/finance/invoices/{invoice_id}/void")).status_code == 404
    assert invoice_id not in (await page.get("/finance/invoices")).text


async def test_the_stylesheet_is_served_from_our_own_pages(client: httpx.AsyncClient) -> None:
    response = await client.get("/finance/static/finance.css")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert "http" not in response.text  # nothing loaded from elsewhere
