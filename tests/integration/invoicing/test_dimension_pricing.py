"""Prices on a meter grouped by model and direction, through HTTP: the most specific matching
price wins, a grouped price has a line per group with its tiers counted per group, and what no
price matches is shown as unpriced quantity at 0; the draft, the upcoming invoice and the
finalized invoice agree, each amount checked against a Decimal computation here."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import httpx

from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_invoice_lifecycle import call, listed, run, subscribe
from tests.integration.web.test_auth import assert_problem

GPT_OUTPUT = {
    "meter": "tokens",
    "model": "per_unit",
    "unit_amount": "0.00002",
    "filters": {"model": ["gpt-4o"], "direction": ["output"]},
}
GPT_BY_DIRECTION = {
    "meter": "tokens",
    "model": "graduated",
    "filters": {"model": ["gpt-4o"]},
    "group_by": ["direction"],
    "tiers": [{"up_to": "1000000", "unit_amount": "0.00001"}, {"up_to": None, "unit_amount": "0.000005"}],
}
MINI = {
    "meter": "tokens",
    "model": "per_unit",
    "unit_amount": "0.000001",
    "filters": {"model": ["mini", "nano"]},
}

# (model, direction, tokens); None leaves the property out.
USAGE = [
    ("gpt-4o", "output", 300_000),
    ("gpt-4o", "output", 200_000),
    ("gpt-4o", "input", 800_000),
    ("gpt-4o", "input", 700_000),
    ("gpt-4o", None, 200_000),
    ("mini", "input", 3_000_000),
    ("nano", "output", 1_000_000),
    ("llama", "input", 12_345),
    (None, "input", 55),
]


def cents(exact_dollars: Decimal) -> int:
    return int((exact_dollars * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def graduated(quantity: Decimal) -> Decimal:
    first = min(quantity, Decimal(1_000_000))
    return first * Decimal("0.00001") + max(quantity - first, Decimal(0)) * Decimal("0.000005")


def expected_lines() -> list[tuple[int | None, dict | None, Decimal, int, Decimal | None]]:
    """(price, group, quantity, amount, unpriced quantity) in invoice order, computed here."""

    def total(match) -> Decimal:
        return Decimal(sum(v for m, d, v in USAGE if match(m, d)))

    output = total(lambda m, d: m == "gpt-4o" and d == "output")
    gpt_input = total(lambda m, d: m == "gpt-4o" and d == "input")
    gpt_none = total(lambda m, d: m == "gpt-4o" and d is None)
    small = total(lambda m, d: m in ("mini", "nano"))
    unpriced = total(lambda m, d: m not in ("gpt-4o", "mini", "nano"))
    return [
        (0, None, output, cents(output * Decimal("0.00002")), None),
        (1, {"direction": "input"}, gpt_input, cents(graduated(gpt_input)), None),
        (1, {"direction": None}, gpt_none, cents(graduated(gpt_none)), None),
        (2, None, small, cents(small * Decimal("0.000001")), None),
        (None, None, unpriced, 0, unpriced),
    ]


async def ai_tenant(client: httpx.AsyncClient, tenant: TenantHandle, month: str = "10") -> None:
    """The meter, the plan, customer c1 since the 1st of 2026-``month``, and ``USAGE`` in that month."""
    meter = {"key": "tokens", "aggregation": "sum", "group_by": ["model", "direction"]}
    await call(client, tenant, "/v1/meters", meter, status=201)
    plan = {"code": "ai", "prices": [GPT_OUTPUT, GPT_BY_DIRECTION, MINI]}
    await call(client, tenant, "/v1/plans", plan, status=201)
    await call(client, tenant, "/v1/customers", {"external_id": "c1", "timezone": "UTC"}, status=201)
    await subscribe(client, tenant, ["c1"], starts_at=f"2026-{month}-01T00:00:00Z", plan="ai")
    events = []
    for n, (model, direction, tokens) in enumerate(USAGE):
        properties = {k: v for k, v in (("model", model), ("direction", direction)) if v is not None}
        events.append(
            {
                "id": f"e{n}",
                "customer": "c1",
                "meter": "tokens",
                "value": str(tokens),
                "timestamp": f"2026-{month}-{10 + n:02d}T08:00:00Z",
                "properties": properties,
            }
        )
    result = await call(client, tenant, "/v1/events/batch", {"events": events}, scope=Scope.INGEST)
    assert result["accepted"] == len(USAGE), result


def usage_lines(invoice: dict) -> list[tuple[int | None, dict | None, Decimal, int, Decimal | None]]:
    return [
        (
            line["price"],
            line["group"],
            Decimal(line["quantity"]),
            line["amount"],
            None if line["unpriced_quantity"] is None else Decimal(line["unpriced_quantity"]),
        )
        for line in invoice["lines"]
        if line["kind"] == "usage"
    ]


async def test_the_most_specific_price_wins_and_each_group_has_its_own_line_and_tiers(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await ai_tenant(client, tenant)
    expected = expected_lines()
    subtotal = sum(amount for _, _, _, amount, _ in expected)

    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 1
    (draft,) = await listed(client, tenant)
    assert usage_lines(draft) == expected
    assert draft["subtotal"] == subtotal
    descriptions = [line["description"] for line in draft["lines"]]
    assert any("direction=input" in text for text in descriptions), descriptions

    assert (await run(client, tenant, "2026-11-02T01:00:00Z"))["invoices_finalized"] == 1
    (final,) = await listed(client, tenant)
    assert final["status"] in ("open", "paid")
    assert usage_lines(final) == expected
    assert final["subtotal"] == subtotal


async def test_the_upcoming_invoice_previews_the_same_lines(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await ai_tenant(client, tenant, month="11")  # the tests' clock is in November 2026
    upcoming = await call(client, tenant, "/v1/customers/c1/upcoming-invoice", method="GET")
    assert usage_lines(upcoming) == expected_lines()


async def test_grouped_usage_query_agrees_with_the_lines(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await ai_tenant(client, tenant)
    response = await client.get(
        "/v1/customers/c1/usage",
        headers=tenant.headers(),
        params={
            "meter": "tokens",
            "from": "2026-10-01T00:00:00Z",
            "to": "2026-11-01T00:00:00Z",
            "granularity": "day",
            "group_by": "model",
            "filter[model]": ["gpt-4o", "mini"],
        },
    )
    assert response.status_code == 200, response.text
    totals = {
        group["group"]["model"]: sum(Decimal(b["value"]) for b in group["buckets"])
        for group in response.json()["groups"]
    }
    assert totals == {
        model: Decimal(sum(v for m, _, v in USAGE if m == model)) for model in ("gpt-4o", "mini")
    }


async def test_prices_that_could_both_win_one_group_are_refused(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    meter = {"key": "tokens", "aggregation": "sum", "group_by": ["model", "direction"]}
    await call(client, tenant, "/v1/meters", meter, status=201)
    pairs = [
        ({"model": ["a", "b"]}, {"direction": ["in"]}),  # same number of keys, no key in common
        ({"model": ["a"]}, {"model": ["a", "c"]}),  # a key in common, values overlapping
    ]
    for first, second in pairs:
        prices = [
            {"meter": "tokens", "model": "per_unit", "unit_amount": "1", "filters": first},
            {"meter": "tokens", "model": "per_unit", "unit_amount": "2", "filters": second},
        ]
        response = await client.post(
            "/v1/plans", headers=tenant.headers(), json={"code": "x", "prices": prices}
        )
        assert_problem(response, 422, "ambiguous_prices")
    disjoint = [
        {"meter": "tokens", "model": "per_unit", "unit_amount": "1", "filters": {"model": ["a"]}},
        {"meter": "tokens", "model": "per_unit", "unit_amount": "2", "filters": {"model": ["b"]}},
        {
            "meter": "tokens",
            "model": "per_unit",
            "unit_amount": "3",
            "filters": {"model": ["a"], "direction": ["in"]},
        },
    ]
    await call(client, tenant, "/v1/plans", {"code": "ok", "prices": disjoint}, status=201)
    bad_key = [{"meter": "tokens", "model": "per_unit", "unit_amount": "1", "group_by": ["region"]}]
    response = await client.post("/v1/plans", headers=tenant.headers(), json={"code": "y", "prices": bad_key})
    assert response.status_code == 422, response.text


async def test_late_usage_is_billed_per_price_and_group_on_cumulative_quantities(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await ai_tenant(client, tenant)
    await run(client, tenant, "2026-11-01T00:00:00Z")
    assert (await run(client, tenant, "2026-11-02T01:00:00Z"))["invoices_finalized"] == 1
    late = [
        ("gpt-4o", "input", 600_000),  # price 1, group input: into its second tier
        ("gpt-4o", "output", 50_000),  # price 0
        ("llama", "output", 10),  # unpriced: billed at 0, no late line
    ]
    events = [
        {
            "id": f"late{n}",
            "customer": "c1",
            "meter": "tokens",
            "value": str(tokens),
            "timestamp": "2026-10-28T12:00:00Z",
            "properties": {"model": model, "direction": direction},
        }
        for n, (model, direction, tokens) in enumerate(late)
    ]
    result = await call(client, tenant, "/v1/events/batch", {"events": events}, scope=Scope.INGEST)
    assert result["accepted"] == 3, result["results"]
    await run(client, tenant, "2027-01-01T00:00:00Z")
    (november,) = [i for i in await listed(client, tenant) if i["period_start"].startswith("2026-11-01")]
    got = [
        (line["price"], line["group"], Decimal(line["quantity"]), line["amount"])
        for line in november["lines"]
        if line["kind"] == "late_usage"
    ]
    before_input = Decimal(1_500_000)
    assert got == [
        (
            0,
            None,
            Decimal(50_000),
            cents(Decimal(550_000) * Decimal("0.00002")) - cents(Decimal(500_000) * Decimal("0.00002")),
        ),
        (
            1,
            {"direction": "input"},
            Decimal(600_000),
            cents(graduated(before_input + 600_000)) - cents(graduated(before_input)),
        ),
    ]


async def test_late_payments_under_a_percentage_price_bill_their_fees(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    price = {
        "meter": "payments",
        "model": "percentage",
        "rate": "2.9",
        "fixed_amount_per_event": 30,
        "maximum_per_event": 1000,
        "free_units": 1,
    }
    await call(client, tenant, "/v1/meters", {"key": "payments", "aggregation": "sum"}, status=201)
    await call(client, tenant, "/v1/plans", {"code": "pay", "prices": [price]}, status=201)
    await call(client, tenant, "/v1/customers", {"external_id": "c1", "timezone": "UTC"}, status=201)
    await subscribe(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", plan="pay")

    async def pay(event_id: str, day: int, value: str) -> None:
        body = {
            "id": event_id,
            "customer": "c1",
            "meter": "payments",
            "value": value,
            "timestamp": f"2026-10-{day:02d}T09:00:00Z",
        }
        await call(client, tenant, "/v1/events", body, status=202, scope=Scope.INGEST)

    def fee(value: str) -> Decimal:
        return min(Decimal(value) * Decimal("2.9") + 30, Decimal(1000))  # cents: value x 100 x 2.9%

    await pay("p1", 3, "10.00")  # the first payment of the period: free
    await pay("p2", 5, "120.50")
    await run(client, tenant, "2026-11-01T00:00:00Z")
    assert (await run(client, tenant, "2026-11-02T01:00:00Z"))["invoices_finalized"] == 1
    billed = int(fee("120.50").quantize(Decimal(1), rounding=ROUND_HALF_UP))
    await pay("p3", 20, "999.99")  # late: capped
    await pay("p0", 1, "50.00")  # late and earlier than p1: now the free one
    await run(client, tenant, "2026-12-01T00:00:00Z")
    (november,) = [i for i in await listed(client, tenant) if i["period_start"].startswith("2026-11-01")]
    (late,) = [line for line in november["lines"] if line["kind"] == "late_usage"]
    now = sum((fee(v) for v in ("10.00", "120.50", "999.99")), Decimal(0))
    assert Decimal(late["quantity"]) == Decimal("1049.99")
    assert late["amount"] == int(now.quantize(Decimal(1), rounding=ROUND_HALF_UP)) - billed
