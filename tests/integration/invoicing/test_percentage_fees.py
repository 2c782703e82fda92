"""The percentage model billed through HTTP: each event's fee is computed at ingestion with the
price its group wins, the first ``free_units`` events by (timestamp, acceptance order) pay
nothing, and the line bills the exact sum of the rest, rounded once. The upcoming invoice, the
draft, its recompute after more usage and the finalized invoice agree, each amount checked
against a Decimal computation here."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.integration.invoicing.test_invoice_lifecycle import call, listed, run

RATE, FIXED, MINIMUM, MAXIMUM, FREE = Decimal("2.9"), 30, 50, 1000, 2
PAYMENTS = {
    "meter": "payments",
    "model": "percentage",
    "rate": "2.9",
    "fixed_amount_per_event": FIXED,
    "minimum_per_event": MINIMUM,
    "maximum_per_event": MAXIMUM,
    "free_units": FREE,
}

# (id, timestamp, value in dollars), by batch: timestamps out of posting order, and a tie at
# 11-02 08:00 whose earlier accepted event (p8, first batch) is free and later one (p7) is not.
FIRST_BATCH = [
    ("p1", "2026-10-20T10:00:00Z", "100.00"),  # 320 cents
    ("p2", "2026-10-05T10:00:00Z", "5"),  # 44.5: the minimum, 50
    ("p3", "2026-10-15T10:00:00Z", "1000"),  # 2930: the maximum, 1000
    ("p8", "2026-10-02T08:00:00Z", "400"),  # 1190: the maximum, free (first at its instant)
    ("p5", "2026-10-25T10:00:00Z", "0.01"),  # 30.029: the minimum
    ("p6", "2026-10-10T10:00:00Z", "57.77"),  # 197.533
]
SECOND_BATCH = [
    ("p4", "2026-10-01T09:00:00Z", "12.34"),  # 65.786, the earliest: free
    ("p7", "2026-10-02T08:00:00Z", "12.35"),  # 65.815, tied with p8 but accepted after it
]


def fee(value: Decimal, rate: Decimal = RATE, fixed: int = FIXED) -> Decimal:
    """Cents, exact: value dollars x rate % = value x rate cents, plus the fixed amount, clamped."""
    return min(max(value * rate + fixed, Decimal(MINIMUM)), Decimal(MAXIMUM))


def line_amount(events: list[tuple[str, str, str]], free: int, posted: list[str]) -> int:
    """The events in (timestamp, posting order), the first ``free`` dropped, the rest summed."""
    ordered = sorted(events, key=lambda e: (e[1], posted.index(e[0])))
    total = sum((fee(Decimal(value)) for _, _, value in ordered[free:]), Decimal(0))
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def post(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    customer: str,
    events: list[tuple[str, str, str]],
    **extra: Any,
) -> None:
    body = {
        "events": [
            {
                "id": event_id,
                "customer": customer,
                "meter": "payments",
                "timestamp": at,
                "value": value,
                **({"properties": extra["properties"][event_id]} if "properties" in extra else {}),
            }
            for event_id, at, value in events
        ]
    }
    result = await call(client, tenant, "/v1/events/batch", body, scope=Scope.INGEST)
    assert result["accepted"] == len(events), result


async def shop(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    prices: list[dict],
    *,
    group_by: list[str] | None = None,
    timezone: str = "UTC",
    starts_at: str = "2026-10-01T00:00:00Z",
) -> None:
    meter = {"key": "payments", "aggregation": "sum", **({"group_by": group_by} if group_by else {})}
    await call(client, tenant, "/v1/meters", meter, status=201)
    await call(client, tenant, "/v1/plans", {"code": "pay", "prices": prices}, status=201)
    await call(client, tenant, "/v1/customers", {"external_id": "c1", "timezone": timezone}, status=201)
    await subscribe(client, tenant, ["c1"], starts_at=starts_at, plan="pay")


def usage(invoice: dict) -> list[tuple[int | None, dict | None, Decimal, int]]:
    return [
        (line["price"], line["group"], Decimal(line["quantity"]), line["amount"])
        for line in invoice["lines"]
        if line["kind"] == "usage"
    ]


def total_value(events: list[tuple[str, str, str]]) -> Decimal:
    return sum((Decimal(value) for _, _, value in events), Decimal(0))


async def test_fees_are_clamped_the_earliest_are_free_and_every_invoice_agrees(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await shop(client, tenant, [PAYMENTS])
    await post(client, tenant, "c1", FIRST_BATCH)
    await post(client, tenant, "c1", SECOND_BATCH)
    events = FIRST_BATCH + SECOND_BATCH
    posted = [event_id for event_id, _, _ in events]
    expected = [(0, None, total_value(events), line_amount(events, FREE, posted))]
    # Free by posting order (p1, p2) would bill another amount: the order is the timestamps'.
    assert line_amount(events, FREE, posted) != int(
        sum(fee(Decimal(v)) for _, _, v in events[FREE:]).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    )

    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 1
    (draft,) = await listed(client, tenant)
    assert usage(draft) == expected
    assert "2.9% + 0.30" in draft["lines"][0]["description"]

    # Usage after the draft exists, the new earliest among it: the draft is recomputed.
    late = [("p9", "2026-10-01T00:30:00Z", "250"), ("p10", "2026-10-29T23:59:59Z", "80.08")]
    await post(client, tenant, "c1", late)
    events += late
    posted += [event_id for event_id, _, _ in late]
    expected = [(0, None, total_value(events), line_amount(events, FREE, posted))]
    await run(client, tenant, "2026-11-01T00:05:00Z")
    (draft,) = await listed(client, tenant)
    assert usage(draft) == expected

    assert (await run(client, tenant, "2026-11-02T01:00:00Z"))["invoices_finalized"] == 1
    (final,) = await listed(client, tenant)
    assert final["status"] in ("open", "paid")
    assert usage(final) == expected
    assert final["subtotal"] == expected[0][3]


async def test_a_filtered_grouped_percentage_price_beside_a_per_unit_price(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    eu_cards = {
        **PAYMENTS,
        "rate": "1.5",
        "fixed_amount_per_event": 25,
        "free_units": 1,
        "filters": {"region": ["eu"]},
        "group_by": ["method"],
    }
    flat = {"meter": "payments", "model": "per_unit", "unit_amount": "0.02"}
    await shop(client, tenant, [eu_cards, flat], group_by=["region", "method"])
    # (id, timestamp, value, region, method)
    rows = [
        ("g1", "2026-10-09T00:00:00Z", "200", "eu", "card"),  # 325
        ("g2", "2026-10-03T00:00:00Z", "10", "eu", "card"),  # 40 -> 50, the first card: free
        ("g3", "2026-10-04T00:00:00Z", "3000", "eu", "card"),  # 4525 -> 1000
        ("g4", "2026-10-20T00:00:00Z", "77.77", "eu", "sepa"),  # 141.655
        ("g5", "2026-10-02T00:00:00Z", "40", "eu", "sepa"),  # 85, the first sepa: free
        ("g6", "2026-10-05T00:00:00Z", "123.45", "eu", None),  # 210.175, alone: free
        ("g7", "2026-10-06T00:00:00Z", "500", "us", "card"),  # per_unit
        ("g8", "2026-10-07T00:00:00Z", "64.5", None, "card"),  # per_unit
    ]
    properties = {
        e: {k: v for k, v in (("region", region), ("method", method)) if v is not None}
        for e, _, _, region, method in rows
    }
    await post(client, tenant, "c1", [r[:3] for r in rows], properties=properties)

    def pct(method: str | None) -> tuple[int, dict, Decimal, int]:
        mine = sorted((at, Decimal(v)) for _, at, v, region, m in rows if region == "eu" and m == method)
        fees = [min(max(v * Decimal("1.5") + 25, Decimal(MINIMUM)), Decimal(MAXIMUM)) for _, v in mine[1:]]
        amount = int(sum(fees, Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return (0, {"method": method}, sum((v for _, v in mine), Decimal(0)), amount)

    others = sum((Decimal(v) for _, _, v, region, _ in rows if region != "eu"), Decimal(0))
    expected = [
        pct("card"),
        pct("sepa"),
        pct(None),
        (1, None, others, int((others * Decimal("0.02") * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))),
    ]
    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 1
    (draft,) = await listed(client, tenant)
    assert usage(draft) == expected
    assert (await run(client, tenant, "2026-11-02T01:00:00Z"))["invoices_finalized"] == 1
    (final,) = await listed(client, tenant)
    assert usage(final) == expected


async def test_a_period_cutting_utc_hours_reads_its_edges_from_the_events(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    # Asia/Kolkata: the period is [2026-09-30 18:30Z, 2026-10-31 18:30Z).
    await shop(client, tenant, [PAYMENTS], timezone="Asia/Kolkata", starts_at="2026-10-01T00:00:00+05:30")
    inside = [
        ("k1", "2026-09-30T18:50:00Z", "300"),  # the cut first hour: 900, second: free
        ("k2", "2026-09-30T18:40:00Z", "2"),  # the earliest: free
        ("k3", "2026-09-30T18:55:00Z", "20"),  # 88
        ("k4", "2026-10-14T03:00:00Z", "61.11"),  # a whole hour: 207.219
        ("k5", "2026-10-31T18:10:00Z", "44.44"),  # the cut last hour: 158.876
    ]
    after = [("k6", "2026-10-31T18:45:00Z", "999")]  # the next period, in the same UTC hour
    await post(client, tenant, "c1", inside + after)
    posted = [event_id for event_id, _, _ in inside]
    expected = [(0, None, total_value(inside), line_amount(inside, FREE, posted))]
    assert (await run(client, tenant, "2026-10-31T18:31:00Z"))["invoices_created"] == 1
    (draft,) = await listed(client, tenant)
    assert usage(draft) == expected
    assert (await run(client, tenant, "2026-11-01T19:00:00Z"))["invoices_finalized"] == 1
    (final,) = await listed(client, tenant, status="open") or await listed(client, tenant, status="paid")
    assert usage(final) == expected


async def test_the_upcoming_invoice_bills_the_fees_of_the_current_period(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await shop(client, tenant, [PAYMENTS], starts_at="2026-11-01T00:00:00Z")
    events = [
        ("u1", "2026-11-20T10:00:00Z", "150"),  # 465
        ("u2", "2026-11-03T10:00:00Z", "9.99"),  # 58.971
        ("u3", "2026-11-02T10:00:00Z", "700"),  # 2060 -> 1000, the earliest: free
        ("u4", "2026-11-21T11:30:00Z", "33.33"),  # 126.657
    ]
    await post(client, tenant, "c1", events)
    posted = [event_id for event_id, _, _ in events]
    upcoming = await call(client, tenant, "/v1/customers/c1/upcoming-invoice", method="GET")
    assert usage(upcoming) == [(0, None, total_value(events), line_amount(events, FREE, posted))]
