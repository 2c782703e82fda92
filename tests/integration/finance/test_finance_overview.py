"""The finance overview (headline figures, revenue, recovery and usage charts with their tables)
and the customer pages (list with search and filters, a customer's page), through HTTP as a
browser would use them; every figure shown is checked against what the API says."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from markupsafe import escape

from billing.core import money
from billing.core.clock import FrozenClock
from billing.web.auth import Scope
from tests.conftest import FROZEN_AT, TenantHandle, subscribe
from tests.finance_browser import FinanceBrowser
from tests.integration.invoicing.test_invoice_lifecycle import PER_UNIT, call, listed, run, send, setup

SVG = "{http://www.w3.org/2000/svg}"
EVIL = 'Ann & "Bob" <Co>'
PEAK_NAME = 'Peak <"&"> load'
FINALIZED = ("open", "paid", "uncollectible")
DASH = "\N{EN DASH}"  # shown where a max or latest meter has no value
USAGE_FROM, USAGE_TO = "2026-10-23T00:00:00Z", "2026-11-22T00:00:00Z"  # the 30 days up to the clock's


@pytest.fixture
async def books(client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock) -> dict[str, Any]:
    """September and October billed, and usage in November (the clock is 21 November):

    c1 pays (September $12.50 and October $7.00, $2.00 of it refunded in November); c2's $3.00
    for September is declined, retried and given up in October; c3's $40.00 for October is
    declined for good (expired card) and stays in dunning (no run has come to its last slot); c4's
    $5.00 for October is declined, then paid with a new card: of November's two cases one is
    recovered.
    """
    await setup(client, tenant, ["c1", "c2", "c3", "c4"], starts_at="2026-09-01T00:00:00Z", prices=PER_UNIT)
    peak = {"key": "peak", "name": PEAK_NAME, "aggregation": "max", "unit": 'req/s "<>"'}
    await call(client, tenant, "/v1/meters", peak, status=201)
    for customer, patch in {
        "c1": {"name": EVIL, "email": "ann@acme.com", "default_payment_method": "pm_card_visa"},
        "c2": {
            "name": "Globex",
            "email": "billing@globex.com",
            "default_payment_method": "pm_card_chargeDeclinedInsufficientFunds",
        },
        "c3": {
            "name": "Initech",
            "default_payment_method": "pm_card_chargeDeclinedExpiredCard",
            "card": {"id": "card_1", "brand": "visa", "last4": "0069", "exp_month": 9, "exp_year": 2026},
        },
        "c4": {"name": "Hooli 100%", "default_payment_method": "pm_card_chargeDeclinedInsufficientFunds"},
    }.items():
        await call(client, tenant, f"/v1/customers/{customer}", patch, method="PATCH")
    await send(
        client,
        tenant,
        ("s1", "c1", "2026-09-10T00:00:00Z", "12.5"),
        ("s2", "c2", "2026-09-12T00:00:00Z", "3"),
    )
    await run(client, tenant, "2026-10-02T00:00:00Z")
    for day in ("05", "07", "09"):  # c2's retries, then the case is exhausted
        await run(client, tenant, f"2026-10-{day}T00:00:00Z")
    await send(
        client,
        tenant,
        ("o1", "c1", "2026-10-11T00:00:00Z", "7"),
        ("o3", "c3", "2026-10-05T00:00:00Z", "40"),
        ("o4", "c4", "2026-10-06T00:00:00Z", "5"),
    )
    await run(client, tenant, "2026-11-02T00:00:00Z")
    clock.set(datetime(2026, 11, 4, tzinfo=UTC))  # c4's new card is charged at once
    await call(client, tenant, "/v1/customers/c4", {"default_payment_method": "pm_card_visa"}, method="PATCH")
    await run(client, tenant, "2026-11-04T00:00:00Z")
    clock.set(FROZEN_AT)
    by_key = {f"{i['customer_external_id']}-{i['period_start'][:7]}": i for i in await listed(client, tenant)}
    await call(client, tenant, f"/v1/invoices/{by_key['c1-2026-10']['id']}/refund", {"amount": 200})
    await send(
        client,
        tenant,
        ("n1", "c1", "2026-11-10T08:00:00Z", "2"),
        ("n2", "c2", "2026-11-10T09:30:00Z", "3"),
        ("n3", "c1", "2026-11-20T23:59:59Z", "1.5"),
        ("p1", "c1", "2026-11-10T08:00:00Z", "4", "peak"),
        ("p2", "c2", "2026-11-10T10:00:00Z", "9", "peak"),
        ("p3", "c1", "2026-11-10T11:00:00Z", "5", "peak"),
    )
    customers = {
        c["external_id"]: c
        for c in (await call(client, tenant, "/v1/customers?limit=100", method="GET"))["data"]
    }
    return {"invoices": by_key, "customers": customers}


@pytest.fixture
async def browser(client: httpx.AsyncClient, tenant: TenantHandle) -> FinanceBrowser:
    page = FinanceBrowser(client)
    response = await page.log_in(tenant.keys[Scope.FINANCE])
    assert response.status_code == 303, response.text
    return page


class _Tables(HTMLParser):
    """Rows of every <table> with a given class, as lists of cell texts."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class, self.depth, self.rows, self.cell = css_class, 0, [], None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self.depth or self.css_class in (dict(attrs).get("class") or "").split()):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []
        elif self.cell is not None:
            self.cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table(page: str, css_class: str) -> list[list[str]]:
    parser = _Tables(css_class)
    parser.feed(page)
    return parser.rows[1:]  # without the header row


def svgs(page: str) -> list[ET.Element]:
    """Every inline chart, parsed as XML (so each must be well-formed on its own)."""
    return [ET.fromstring(found) for found in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def usd(amount: int) -> str:
    return money.format_money(amount, "USD")


async def api_list(client: httpx.AsyncClient, tenant: TenantHandle, path: str) -> list[dict]:
    return (await call(client, tenant, f"{path}?limit=100", method="GET"))["data"]


# The overview


async def test_finance_home_shows_the_overview_and_marks_it_in_the_navigation(
    browser: FinanceBrowser,
) -> None:
    home = await browser.get("/finance")
    assert (home.status_code, home.headers["location"]) == (303, "/finance/overview")
    page = (await browser.get("/finance/overview")).text
    assert '<a href="/finance/overview" aria-current="page">Overview</a>' in page
    invoices = (await browser.get("/finance/invoices")).text
    assert '<a href="/finance/invoices" aria-current="page">Invoices</a>' in invoices


async def test_revenue_per_month_equals_the_invoices_payments_and_refunds_of_the_api(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, books: dict[str, Any]
) -> None:
    invoiced: Counter[str] = Counter()
    paid: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for invoice in await listed(client, tenant):
        if invoice["status"] in FINALIZED:
            invoiced[invoice["finalized_at"][:7]] += invoice["total"]
        for refund in invoice["refunds"]:
            if refund["status"] == "succeeded":
                refunded[refund["created_at"][:7]] += refund["amount"]
    for payment in await api_list(client, tenant, "/v1/payments"):
        if payment["status"] == "succeeded":
            paid[payment["completed_at"][:7]] += payment["amount"]
    rows = table((await browser.get("/finance/overview")).text, "revenue")
    expected = [
        [
            month,
            usd(invoiced[month]),
            usd(paid[month]),
            usd(refunded[month]),
            usd(paid[month] - refunded[month]),
        ]
        for month in ("2026-10", "2026-11")
    ]
    assert rows == expected
    # By hand: September's invoices were finalized in October, October's in November.
    assert rows == [
        ["2026-10", "$15.50", "$12.50", "$0.00", "$12.50"],
        ["2026-11", "$52.00", "$12.00", "$2.00", "$10.00"],
    ]


async def test_the_revenue_chart_draws_invoiced_and_collected_bars_in_proportion(
    browser: FinanceBrowser, books: dict[str, Any]
) -> None:
    page = (await browser.get("/finance/overview")).text
    (chart,) = [svg for svg in svgs(page) if svg.get("aria-labelledby") == "revenue-USD-title"]
    assert chart.get("role") == "img" and chart.find(f"{SVG}title").text == "Revenue per month in USD"
    bars = {
        rect.find(f"{SVG}title").text: float(rect.get("height"))
        for rect in chart.iter(f"{SVG}rect")
        if rect.get("class", "").startswith("bar")
    }
    assert set(bars) == {
        "2026-10 · Invoiced: $15.50",
        "2026-11 · Invoiced: $52.00",
        "2026-10 · Collected: $12.50",
        "2026-11 · Collected: $10.00",
    }
    assert bars["2026-11 · Invoiced: $52.00"] / bars["2026-10 · Invoiced: $15.50"] == pytest.approx(
        52 / 15.5, rel=1e-3
    )
    assert bars["2026-10 · Collected: $12.50"] / bars["2026-11 · Collected: $10.00"] == pytest.approx(
        1.25, rel=1e-3
    )


async def test_recovery_rate_counts_the_cases_opened_each_month_as_the_api_lists_them(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, books: dict[str, Any]
) -> None:
    cases = await api_list(client, tenant, "/v1/dunning/cases")
    by_month: dict[str, Counter[str]] = defaultdict(Counter)
    for case in cases:
        by_month[case["first_failed_at"][:7]][case["status"]] += 1
    page = (await browser.get("/finance/overview")).text
    rows = table(page, "recovery")
    assert [row[:6] for row in rows] == [
        [month, str(sum(by_month[month].values()))]
        + [str(by_month[month][status]) for status in ("recovered", "exhausted", "active", "canceled")]
        for month in ("2026-10", "2026-11")
    ]
    assert [row[6] for row in rows] == ["0.0 %", "50.0 %"]
    (chart,) = [svg for svg in svgs(page) if svg.get("aria-labelledby") == "recovery-title"]
    points = [circle.find(f"{SVG}title").text for circle in chart.iter(f"{SVG}circle")]
    assert points == ["2026-10 · Recovered: 0.0 %", "2026-11 · Recovered: 50.0 %"]


async def test_headline_figures_are_what_is_open_overdue_and_in_dunning(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, books: dict[str, Any]
) -> None:
    open_invoices = await listed(client, tenant, status="open")
    active = [c for c in await api_list(client, tenant, "/v1/dunning/cases") if c["status"] == "active"]
    page = " ".join((await browser.get("/finance/overview")).text.split())
    due = sum(invoice["amount_due"] for invoice in open_invoices)
    assert due == 4000 and len(active) == 1
    assert f'<dt>Open amount due</dt> <dd class="figure"><span class="amount">{usd(due)}</span>' in page
    assert f">{len(open_invoices)} open invoice<" in page
    assert (
        f'<dt>Overdue invoices</dt><dd class="figure"><span class="amount">{len(open_invoices)}</span>'
        in page
    )
    assert f'<dt>Cases in dunning</dt><dd class="figure"><span class="amount">{len(active)}</span>' in page


async def api_daily(
    client: httpx.AsyncClient, tenant: TenantHandle, customers: list[str], meter: str, zone: str
) -> dict[str, Decimal]:
    """The meter's usage per local day over the last 30 days as GET /v1/customers/{id}/usage
    answers it, combined over customers as the overview says: the highest for a max meter,
    added up otherwise; days on which no customer has a value are left out."""
    days: dict[str, list[Decimal]] = defaultdict(list)
    for customer in customers:
        params = {"meter": meter, "from": USAGE_FROM, "to": USAGE_TO, "granularity": "day"}
        if zone != "UTC":
            params |= {"from": "2026-10-22T18:30:00Z", "to": "2026-11-21T18:30:00Z"}
        response = await client.get(
            f"/v1/customers/{customer}/usage", params=params, headers=tenant.headers()
        )
        assert response.json()["timezone"] == zone
        for bucket in response.json()["buckets"]:
            if bucket["value"] is not None:
                local = datetime.fromisoformat(bucket["start"]).astimezone(ZoneInfo(zone))
                days[f"{local:%Y-%m-%d}"].append(Decimal(bucket["value"]))
    combine = max if meter == "peak" else sum
    return {day: combine(values) for day, values in days.items()}


def shown_daily(page: str, meter: str) -> dict[str, Decimal]:
    rows = dict(table(page, f"usage-{meter}"))
    assert len(rows) == 30 and min(rows) == "2026-10-23" and max(rows) == "2026-11-21"
    return {day: Decimal(value) for day, value in rows.items() if value != DASH}


async def test_usage_per_meter_per_day_adds_up_the_customers_usage_from_the_api(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, books: dict[str, Any]
) -> None:
    page = (await browser.get("/finance/overview")).text
    for meter in ("units", "peak"):
        assert shown_daily(page, meter) == await api_daily(
            client, tenant, ["c1", "c2", "c3", "c4"], meter, "UTC"
        )
    units, peak = dict(table(page, "usage-units")), dict(table(page, "usage-peak"))
    assert (units["2026-11-10"], units["2026-11-20"], units["2026-11-09"]) == ("5", "1.5", "0")
    assert (peak["2026-11-10"], peak["2026-11-09"]) == ("9", DASH)


async def test_usage_days_follow_a_half_hour_zone_for_every_aggregation(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    """Asia/Kolkata's days start at 18:30 UTC, inside a rollup hour: events on either side of the
    edge count on their own local day."""
    await call(client, tenant, "/v1/tenant", {"billing_timezone": "Asia/Kolkata"}, method="PATCH")
    for key, aggregation in (("units", "sum"), ("calls", "count"), ("peak", "max"), ("seats", "latest")):
        await call(client, tenant, "/v1/meters", {"key": key, "aggregation": aggregation}, status=201)
    users = {"key": "users", "aggregation": "unique_count", "unique_property": "user"}
    await call(client, tenant, "/v1/meters", users, status=201)
    for customer in ("k1", "k2"):
        await call(client, tenant, "/v1/customers", {"external_id": customer}, status=201)
    await subscribe(client, tenant, ["k1", "k2"], starts_at="2026-10-01T00:00:00Z")
    events = [
        ("k1", "2026-11-10T12:00:00Z", "5", "u1"),  # 17:30 on the 10th in Kolkata
        ("k1", "2026-11-10T18:29:00Z", "7", "u1"),  # 23:59 on the 10th
        ("k1", "2026-11-10T18:31:00Z", "3", "u1"),  # 00:01 on the 11th
        ("k1", "2026-11-10T18:40:00Z", "1", "u2"),
        ("k2", "2026-11-10T18:45:00Z", "4", "u1"),
    ]
    batch = [
        {
            "id": f"{meter}-{n}",
            "customer": customer,
            "meter": meter,
            "timestamp": at,
            "value": value,
            "properties": {"user": user},
        }
        for n, (customer, at, value, user) in enumerate(events)
        for meter in ("units", "calls", "peak", "seats", "users")
    ]
    assert (await call(client, tenant, "/v1/events/batch", {"events": batch}, scope=Scope.INGEST))[
        "accepted"
    ] == 25
    page = (await browser.get("/finance/overview")).text
    for meter in ("units", "calls", "peak", "seats", "users"):
        assert shown_daily(page, meter) == await api_daily(
            client, tenant, ["k1", "k2"], meter, "Asia/Kolkata"
        )
    day = {
        meter: dict(table(page, f"usage-{meter}")) for meter in ("units", "calls", "peak", "seats", "users")
    }
    assert [day[m]["2026-11-10"] for m in day] == ["12", "2", "7", "7", "1"]
    assert [day[m]["2026-11-11"] for m in day] == ["8", "3", "4", "5", "3"]  # seats: k1's 1 and k2's 4
    assert [day[m]["2026-11-12"] for m in day] == ["0", "0", DASH, DASH, "0"]


async def test_negative_usage_draws_bars_below_the_zero_line(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    """A meter that allows negative values (corrections): a day whose sum is negative shows its
    value and a bar hanging from the zero line, on an axis that reaches below zero."""
    balance = {"key": "balance", "aggregation": "sum", "allow_negative": True}
    await call(client, tenant, "/v1/meters", balance, status=201)
    await call(client, tenant, "/v1/customers", {"external_id": "n1"}, status=201)
    await subscribe(client, tenant, ["n1"], starts_at="2026-10-01T00:00:00Z")
    sent = [("2026-11-10T08:00:00Z", "-7.5"), ("2026-11-10T09:00:00Z", "2"), ("2026-11-11T08:00:00Z", "3")]
    batch = [
        {"id": f"b{n}", "customer": "n1", "meter": "balance", "timestamp": at, "value": value}
        for n, (at, value) in enumerate(sent)
    ]
    assert (await call(client, tenant, "/v1/events/batch", {"events": batch}, scope=Scope.INGEST))[
        "accepted"
    ] == 3
    page = (await browser.get("/finance/overview")).text
    rows = dict(table(page, "usage-balance"))
    assert (rows["2026-11-10"], rows["2026-11-11"]) == (str(Decimal("-7.5") + 2), "3")

    chart = next(svg for svg in svgs(page) if svg.find(f"{SVG}title").text == "balance: usage per day")
    ticks = [Decimal(t.text.replace(",", "")) for t in chart.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert min(ticks) <= Decimal("-5.5") < 0 < 3 <= max(ticks)
    zero = next(float(line.get("y1")) for line in chart.iter(f"{SVG}line") if line.get("stroke") == "#5b6574")
    bars = {
        rect.find(f"{SVG}title").text.split(" · ")[0]: rect
        for rect in chart.iter(f"{SVG}rect")
        if rect.get("class", "").startswith("bar")
    }
    down, up = bars["2026-11-10"], bars["2026-11-11"]
    assert float(down.get("y")) == pytest.approx(zero, abs=0.01) and float(down.get("height")) > 0
    assert float(up.get("y")) + float(up.get("height")) == pytest.approx(zero, abs=0.01)
    # Heights in proportion to the values: 5.5 down, 3 up.
    assert float(down.get("height")) / float(up.get("height")) == pytest.approx(5.5 / 3, rel=0.01)


async def test_text_from_tenants_users_is_escaped_in_pages_and_charts(
    browser: FinanceBrowser, books: dict[str, Any]
) -> None:
    overview = (await browser.get("/finance/overview")).text
    assert PEAK_NAME not in overview and escape(PEAK_NAME) in overview
    titles = [svg.find(f"{SVG}title").text for svg in svgs(overview)]
    assert f'{PEAK_NAME} (req/s "<>"): usage per day' in titles
    listing = (await browser.get("/finance/customers")).text
    detail = (await browser.get(f"/finance/customers/{books['customers']['c1']['id']}")).text
    for page in (listing, detail):
        assert EVIL not in page and escape(EVIL) in page


async def test_an_empty_tenant_sees_an_overview_without_data(browser: FinanceBrowser) -> None:
    response = await browser.get("/finance/overview")
    assert response.status_code == 200
    assert table(response.text, "revenue") == [["2026-11", "$0.00", "$0.00", "$0.00", "$0.00"]]
    assert table(response.text, "recovery") == [["2026-11", "0", "0", "0", "0", "0", DASH]]
    assert "No meter yet." in response.text
    for chart in svgs(response.text):
        assert [t.text for t in chart.iter(f"{SVG}text") if t.get("class") == "empty"] == ["No data"]


# Customers


async def test_the_customer_list_shows_payment_dunning_due_and_usage_this_period(
    browser: FinanceBrowser, books: dict[str, Any]
) -> None:
    page = (await browser.get("/finance/customers")).text
    assert "4 customers" in page
    rows = {row[1]: row for row in table(page, "customers")}
    assert rows["c1"][:7] == [
        EVIL,
        "c1",
        "ann@acme.com",
        "ok",
        "none",
        "none",
        'peak 5 req/s "<>" units 3.5',
    ]
    assert rows["c2"][3:5] == ["delinquent", "1 exhausted"]
    assert rows["c3"][3:6] == ["action required", "1 active next: wait at 2026-11-05 00:00 UTC", "$40.00"]
    assert rows["c4"][3:7] == ["ok", "none", "none", "no usage yet"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "ACME"}, ["c1"]),
        ({"q": "globex"}, ["c2"]),
        ({"q": "c3"}, ["c3"]),
        ({"q": "100%"}, ["c4"]),
        ({"q": "%"}, ["c4"]),
        ({"payment_status": "delinquent"}, ["c2"]),
        ({"payment_status": "ok"}, ["c1", "c4"]),
        ({"dunning": "active"}, ["c3"]),
        ({"dunning": "exhausted"}, ["c2"]),
        ({"dunning": "none"}, ["c1", "c2", "c4"]),
        ({"q": "c", "dunning": "none", "payment_status": "ok"}, ["c1", "c4"]),
    ],
)
async def test_customers_are_found_by_search_payment_status_and_dunning_state(
    browser: FinanceBrowser, books: dict[str, Any], params: dict[str, str], expected: list[str]
) -> None:
    page = (await browser.get("/finance/customers", **params)).text
    assert sorted(row[1] for row in table(page, "customers")) == expected


async def test_a_filter_that_does_not_parse_is_reported_and_lists_no_customers(
    browser: FinanceBrowser, books: dict[str, Any]
) -> None:
    response = await browser.get("/finance/customers", payment_status="broke", dunning="maybe")
    assert response.status_code == 400
    assert "Choose a payment status" in response.text and "Choose a dunning state" in response.text
    assert table(response.text, "customers") == []


async def test_the_customer_list_pages_fifty_at_a_time(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    for n in range(53):
        await call(client, tenant, "/v1/customers", {"external_id": f"x{n:02d}"}, status=201)
    first = (await browser.get("/finance/customers")).text
    second = (await browser.get("/finance/customers", page="2")).text
    assert (
        "53 customers" in first
        and "Page 1 of 2" in first
        and 'rel="next" href="/finance/customers?page=2"' in first
    )
    assert len(table(first, "customers")) == 50 and [r[1] for r in table(second, "customers")] == [
        "x50",
        "x51",
        "x52",
    ]


async def test_a_customer_page_shows_facts_usage_invoices_and_dunning_cases(
    browser: FinanceBrowser, client: httpx.AsyncClient, tenant: TenantHandle, books: dict[str, Any]
) -> None:
    c3 = books["customers"]["c3"]
    page = (await browser.get(f"/finance/customers/{c3['id']}")).text
    flat = " ".join(page.split())
    assert (
        "visa •••• 0069, expires 09/2026" in flat and "<code>pm_card_chargeDeclinedExpiredCard</code>" in flat
    )
    assert "<dt>Timezone</dt><dd>UTC</dd>" in flat and "action required" in flat
    assert '<dt>Due on open invoices</dt><dd class="num">$40.00 </dd>' in flat
    assert table(page, "period-usage") == [
        [f"{PEAK_NAME} peak", "max", DASH, 'req/s "<>"'],
        ["units units", "sum", "0", ""],
    ]
    invoices = await listed(client, tenant, customer="c3")
    for invoice in invoices:
        assert f'href="/finance/invoices/{invoice["id"]}"' in page
    (row,) = table(page, "cases")
    (case,) = [c for c in await api_list(client, tenant, "/v1/dunning/cases") if c["customer"] == c3["id"]]
    october = books["invoices"]["c3-2026-10"]
    assert row[:5] == [october["number"], "active", "1", "0", "expired_card (hard)"]
    assert (case["next_action"], case["next_action_at"], case["first_failed_at"]) == (
        "wait",
        "2026-11-05T00:00:00Z",
        "2026-11-02T00:00:00Z",
    )
    assert row[5:] == ["wait at 2026-11-05 00:00 UTC", "2026-11-02 00:00 UTC", ""]
    # The plan is shown, and the subscription is past due while its invoice is in dunning.
    (subscription,) = [
        s for s in await api_list(client, tenant, "/v1/subscriptions") if s["customer"] == c3["id"]
    ]
    (sub_row,) = table(page, "subscriptions")
    assert subscription["status"] == "past_due"
    assert sub_row[:4] == [subscription["plan_code"], "past due", "1", "2026-11-01 \u2013 2026-12-01"]


async def test_a_customer_page_answers_by_external_id_too_and_404_for_unknown(
    browser: FinanceBrowser, books: dict[str, Any]
) -> None:
    by_external = await browser.get("/finance/customers/c1")
    assert by_external.status_code == 200 and books["customers"]["c1"]["id"] in by_external.text
    assert (await browser.get("/finance/customers/nobody")).status_code == 404


# Sessions and tenants


@pytest.mark.parametrize("path", ["/finance/overview", "/finance/customers", "/finance/customers/c1"])
async def test_the_pages_need_a_session(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 303 and response.headers["location"].startswith("/finance/login?next=")


async def test_another_tenants_customers_and_figures_stay_hidden(
    client: httpx.AsyncClient, make_tenant: Any, books: dict[str, Any]
) -> None:
    other = await make_tenant(name="Other")
    page = FinanceBrowser(client)
    await page.log_in(other.keys[Scope.FINANCE])
    assert (await page.get(f"/finance/customers/{books['customers']['c1']['id']}")).status_code == 404
    assert "0 customers" in (await page.get("/finance/customers")).text
    overview = (await page.get("/finance/overview")).text
    assert table(overview, "revenue") == [["2026-11", "$0.00", "$0.00", "$0.00", "$0.00"]]
    assert "No meter yet." in overview
