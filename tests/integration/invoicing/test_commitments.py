"""Commitments through the API: a plan's minimum per period and a price's floor and cap, in full
and partial periods, netted by late usage, in three currencies; bad input writes nothing.

Every expected amount comes from the Decimal oracle below (covered seconds from zoneinfo, one
half-up rounding per amount), never from billing/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from zoneinfo import ZoneInfo

import httpx
import pytest

from billing.core.clock import FrozenClock
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_invoice_lifecycle import call, get_invoice, listed, run
from tests.integration.web.test_auth import assert_problem

MakeTenant = Callable[..., Awaitable[TenantHandle]]
CURRENCIES = ["USD", "JPY", "KWD"]
EXPONENTS = {"USD": 2, "JPY": 0, "KWD": 3}
UNIT = "0.5"  # major units per unit, in every currency
PARTIAL_START = "2026-09-16T07:30:17Z"  # 13:00:17 in Kolkata
KOLKATA = "Asia/Kolkata"

# --- oracle ---------------------------------------------------------------------------------------


def half_up(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def month_of(start: datetime, tz: str) -> tuple[datetime, datetime]:
    local = start.astimezone(ZoneInfo(tz))
    year, month = local.year, local.month
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    begin = datetime(year, month, 1, tzinfo=ZoneInfo(tz))
    return begin.astimezone(UTC), datetime(*following, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def prorate(amount: int, start: str, end: str, tz: str) -> int:
    """round(amount x covered seconds / seconds of the local month), half up."""
    begin, finish = month_of(at(start), tz)
    covered = Decimal(int((at(end) - at(start)).total_seconds()))
    month = Decimal(int((finish - begin).total_seconds()))
    with localcontext() as context:
        context.prec = 60
        return half_up(Decimal(amount) * covered / month)


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def charge(units: int, currency: str) -> int:
    return half_up(Decimal(units) * Decimal(UNIT) * Decimal(10) ** EXPONENTS[currency])


# --- API helpers ----------------------------------------------------------------------------------


async def send(
    client: httpx.AsyncClient, tenant: TenantHandle, *events: tuple[str, str, str, int, str]
) -> None:
    """Events as (id, customer, timestamp, value, meter)."""
    body = {
        "events": [
            {"id": e[0], "customer": e[1], "timestamp": e[2], "value": str(e[3]), "meter": e[4]}
            for e in events
        ]
    }
    result = await call(client, tenant, "/v1/events/batch", body)
    assert result["accepted"] == len(events), result


async def customer(
    client: httpx.AsyncClient, tenant: TenantHandle, name: str, tz: str, plan: str, starts: str
) -> None:
    await call(client, tenant, "/v1/customers", {"external_id": name, "timezone": tz}, status=201)
    body = {"customer": name, "plan": plan, "starts_at": starts}
    await call(client, tenant, "/v1/subscriptions", body, status=201)


async def invoices_of(client: httpx.AsyncClient, tenant: TenantHandle, name: str) -> dict[str, dict]:
    """The customer's invoices by period_start."""
    return {i["period_start"]: i for i in await listed(client, tenant, customer=name)}


def shape(invoice: dict) -> list[tuple[str, str | None, int, str]]:
    """(kind, meter, amount, period_start) of each line, in order; the totals checked."""
    assert invoice["subtotal"] == invoice["total"] == sum(x["amount"] for x in invoice["lines"]), invoice
    return [(x["kind"], x["meter"], x["amount"], x["period_start"]) for x in invoice["lines"]]


def of_period(invoices: list[dict], start: str, meter: str | None = None) -> int:
    """What every invoice's lines of the period (a late line of it included) bill for ``meter``."""
    return sum(
        x["amount"]
        for invoice in invoices
        for x in invoice["lines"]
        if x["period_start"].startswith(start[:7]) and x["meter"] == meter and x["kind"] != "base_fee"
    )


# --- the plan minimum -----------------------------------------------------------------------------

MINIMUM = 10000
BASE_FEE = 1000
SEPT, OCT = "2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_period_under_the_plan_minimum_is_topped_up_to_it_and_late_usage_nets_the_true_up(
    client: httpx.AsyncClient, make_tenant: MakeTenant, currency: str
) -> None:
    tenant = await make_tenant(name=f"Commit {currency}", currency=currency)
    await call(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, status=201)
    plan = {
        "code": "committed",
        "name": "Committed",
        "base_fee": BASE_FEE,
        "minimum_amount": MINIMUM,
        "prices": [{"meter": "calls", "model": "per_unit", "unit_amount": UNIT}],
    }
    created = await call(client, tenant, "/v1/plans", plan, status=201)
    assert created["minimum_amount"] == MINIMUM
    assert created["prices"][0]["minimum_amount"] is None and created["prices"][0]["maximum_amount"] is None
    await customer(client, tenant, "full", "UTC", "committed", SEPT)
    await customer(client, tenant, "partial", KOLKATA, "committed", PARTIAL_START)
    await customer(client, tenant, "above", "UTC", "committed", SEPT)
    big = 3 * MINIMUM  # units: 1.5 x the minimum in major units, in every currency
    await send(
        client,
        tenant,
        ("f1", "full", "2026-09-10T00:00:00Z", 3, "calls"),
        ("p1", "partial", "2026-09-20T00:00:00Z", 3, "calls"),
        ("a1", "above", "2026-09-10T00:00:00Z", big, "calls"),
    )
    item = {"customer": "full", "description": "Setup", "amount": 250}
    await call(client, tenant, "/v1/invoice-items", item, status=201)
    assert (await run(client, tenant, OCT))["invoices_created"] == 3

    # A full month: exactly the difference, after the invoice item, which does not count.
    (september,) = (await invoices_of(client, tenant, "full")).values()
    true_up = MINIMUM - BASE_FEE - charge(3, currency)
    assert shape(september) == [
        ("base_fee", None, BASE_FEE, SEPT),
        ("usage", "calls", charge(3, currency), SEPT),
        ("invoice_item", None, 250, september["lines"][2]["period_start"]),
        ("minimum_commitment", None, true_up, SEPT),
    ]
    assert september["lines"][3]["quantity"] == "1"
    assert september["lines"][3]["period_end"] == OCT

    # A partial first month: the floor prorated by covered seconds / seconds of the local month.
    (first,) = (await invoices_of(client, tenant, "partial")).values()
    end = "2026-09-30T18:30:00Z"  # midnight of October 1st in Kolkata
    assert (first["period_start"], first["period_end"]) == (PARTIAL_START, end)
    fee, floor = prorate(BASE_FEE, PARTIAL_START, end, KOLKATA), prorate(MINIMUM, PARTIAL_START, end, KOLKATA)
    assert shape(first) == [
        ("base_fee", None, fee, PARTIAL_START),
        ("usage", "calls", charge(3, currency), PARTIAL_START),
        ("minimum_commitment", None, floor - fee - charge(3, currency), PARTIAL_START),
    ]
    assert "prorated" in first["lines"][2]["description"]

    # Usage above the minimum: no commitment line.
    (above,) = (await invoices_of(client, tenant, "above")).values()
    assert [x[0] for x in shape(above)] == ["base_fee", "usage"]
    assert above["total"] == BASE_FEE + charge(big, currency)

    # Finalized as drafted; then late usage of September nets the true-up left.
    assert (await run(client, tenant, "2026-10-02T00:00:00Z"))["invoices_finalized"] == 3
    finalized = await get_invoice(client, tenant, september["id"])
    assert finalized["status"] == "open" and shape(finalized) == shape(september)
    assert finalized["total"] == BASE_FEE + charge(3, currency) + 250 + true_up
    left = true_up
    billed_units = 3
    for round_, (units, month_end, next_month) in enumerate(
        [(40, "2026-11-01T00:00:00Z", OCT), (20000, "2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z")]
    ):
        await send(client, tenant, (f"late{round_}", "full", "2026-09-20T00:00:00Z", units, "calls"))
        await run(client, tenant, month_end)
        draft = (await invoices_of(client, tenant, "full"))[next_month]
        late = charge(billed_units + units, currency) - charge(billed_units, currency)
        netting = -min(left, late)
        lines = shape(draft)
        assert lines[:2] == [("base_fee", None, BASE_FEE, next_month), ("usage", "calls", 0, next_month)]
        expected_late = [("late_usage", "calls", late, SEPT)] + (
            [("minimum_commitment", None, netting, SEPT)] if netting else []
        )
        assert lines[2:-1] == expected_late
        assert lines[-1] == ("minimum_commitment", None, MINIMUM - BASE_FEE, next_month)
        await run(client, tenant, month_end.replace("-01T", "-02T"))
        final = await get_invoice(client, tenant, draft["id"])
        assert final["status"] == "open" and shape(final) == lines
        left += netting
        billed_units += units
    # Over every invoice, September bills the larger of its minimum and what it used.
    everything = list((await invoices_of(client, tenant, "full")).values())
    september_total = sum(
        x["amount"]
        for i in everything
        for x in i["lines"]
        if x["period_start"] == SEPT and x["kind"] != "invoice_item"
    )
    assert september_total == max(MINIMUM, BASE_FEE + charge(billed_units, currency))


# --- a price's floor and cap ----------------------------------------------------------------------

FLOOR, CAP = 5000, 3000


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_price_floor_and_cap_bound_its_lines_in_full_and_partial_periods_and_across_late_usage(
    client: httpx.AsyncClient, make_tenant: MakeTenant, currency: str
) -> None:
    tenant = await make_tenant(name=f"Bounds {currency}", currency=currency)
    for meter in ("floored", "capped", "both"):
        await call(client, tenant, "/v1/meters", {"key": meter, "aggregation": "sum"}, status=201)
    prices = [
        {"meter": "floored", "model": "per_unit", "unit_amount": UNIT, "minimum_amount": FLOOR},
        {"meter": "capped", "model": "per_unit", "unit_amount": UNIT, "maximum_amount": CAP},
        {
            "meter": "both",
            "model": "per_unit",
            "unit_amount": UNIT,
            "minimum_amount": 2000,
            "maximum_amount": 2000,
        },
    ]
    created = await call(client, tenant, "/v1/plans", {"code": "bounded", "prices": prices}, status=201)
    assert [(p["minimum_amount"], p["maximum_amount"]) for p in created["prices"]] == [
        (FLOOR, None),
        (None, CAP),
        (2000, 2000),
    ]
    assert created["minimum_amount"] is None
    await customer(client, tenant, "full", "UTC", "bounded", SEPT)
    await customer(client, tenant, "partial", KOLKATA, "bounded", PARTIAL_START)
    high = 30000  # units above the cap in every currency
    events = []
    for name, start in (("full", "2026-09-10"), ("partial", "2026-09-20")):
        events += [
            (f"{name}-f", name, f"{start}T00:00:00Z", 3, "floored"),
            (f"{name}-c", name, f"{start}T00:00:00Z", high, "capped"),
            (f"{name}-b", name, f"{start}T00:00:00Z", 1, "both"),
        ]
    await send(client, tenant, *events)
    assert (await run(client, tenant, OCT))["invoices_created"] == 2

    end = "2026-09-30T18:30:00Z"
    for name, start, period_end, tz in (("full", SEPT, OCT, "UTC"), ("partial", PARTIAL_START, end, KOLKATA)):
        (invoice,) = (await invoices_of(client, tenant, name)).values()
        floor, cap, both = (prorate(x, start, period_end, tz) for x in (FLOOR, CAP, 2000))
        assert shape(invoice) == [
            ("usage", "floored", charge(3, currency), start),
            ("price_minimum", "floored", floor - charge(3, currency), start),
            ("usage", "capped", charge(high, currency), start),
            ("price_maximum", "capped", cap - charge(high, currency), start),
            ("usage", "both", charge(1, currency), start),
            ("price_minimum", "both", both - charge(1, currency), start),
        ], name
        assert invoice["total"] == floor + cap + both

    # Late usage of the finalized September: the late line, then what keeps the bounds.
    assert (await run(client, tenant, "2026-10-02T00:00:00Z"))["invoices_finalized"] == 2
    await send(
        client,
        tenant,
        ("late-f", "full", "2026-09-25T00:00:00Z", 20, "floored"),
        ("late-c", "full", "2026-09-25T00:00:00Z", 10, "capped"),
        ("late-b", "full", "2026-09-25T00:00:00Z", high, "both"),
    )
    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 2
    october = (await invoices_of(client, tenant, "full"))[OCT]
    late_floored = charge(23, currency) - charge(3, currency)
    late_capped = charge(high + 10, currency) - charge(high, currency)
    late_both = charge(high + 1, currency) - charge(1, currency)
    # Billed so far: the floor (3 units topped up); the bounded charge now, less that and the late line.
    floored_adjustment = max(charge(23, currency), FLOOR) - (FLOOR + late_floored)
    expected = [
        ("usage", "floored", 0, OCT),
        ("price_minimum", "floored", FLOOR, OCT),
        ("usage", "capped", 0, OCT),
        ("usage", "both", 0, OCT),
        ("price_minimum", "both", 2000, OCT),
        ("late_usage", "floored", late_floored, SEPT),
        ("price_minimum", "floored", floored_adjustment, SEPT),
        ("late_usage", "capped", late_capped, SEPT),
        ("price_maximum", "capped", -late_capped, SEPT),
        ("late_usage", "both", late_both, SEPT),
        ("price_maximum", "both", -late_both, SEPT),
    ]
    assert shape(october) == [line for line in expected if line[2] != 0 or line[0] == "usage"]
    assert floored_adjustment < 0  # the late line is netted against the top-up already billed
    await run(client, tenant, "2026-11-02T00:00:00Z")
    everything = list((await invoices_of(client, tenant, "full")).values())
    assert of_period(everything, SEPT, "floored") == max(charge(23, currency), FLOOR)
    assert of_period(everything, SEPT, "capped") == CAP
    assert of_period(everything, SEPT, "both") == 2000


# --- input ---------------------------------------------------------------------------------------


async def refused(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: object, code: str, method: str = "POST"
) -> set[str]:
    """The fields of a 422 problem with ``code``."""
    response = await client.request(method, path, headers=tenant.headers(), json=body)
    return {error["field"] for error in assert_problem(response, 422, code)["errors"]}


async def test_bounds_are_validated_and_bad_input_writes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, status=201)

    def plan(code: str, minimum: object = None, **bounds: object) -> dict:
        price = {"meter": "calls", "model": "per_unit", "unit_amount": "1", **bounds}
        return {"code": code, "minimum_amount": minimum, "prices": [price]}

    inverted = plan("bad", minimum_amount=11, maximum_amount=10)
    assert await refused(client, tenant, "/v1/plans", inverted, "minimum_exceeds_maximum") == {
        "prices[0].minimum_amount"
    }
    for body, field in (
        (plan("bad", minimum_amount=-1), "prices[0].minimum_amount"),
        (plan("bad", maximum_amount=-1), "prices[0].maximum_amount"),
        (plan("bad", minimum=-1), "minimum_amount"),
        (plan("bad", maximum_amount=10**16), "prices[0].maximum_amount"),
    ):
        assert field in await refused(client, tenant, "/v1/plans", body, "validation_error"), body
    assert (await call(client, tenant, "/v1/plans", method="GET"))["data"] == []

    # Equal bounds are allowed; PATCH sets and clears them while no subscription uses the plan.
    body = plan("ok", 500, minimum_amount=10, maximum_amount=10)
    created = await call(client, tenant, "/v1/plans", body, status=201)
    assert (created["minimum_amount"], created["prices"][0]["minimum_amount"]) == (500, 10)
    price = {
        "meter": "calls",
        "model": "per_unit",
        "unit_amount": "1",
        "minimum_amount": 9,
        "maximum_amount": 8,
    }
    await refused(client, tenant, "/v1/plans/ok", {"prices": [price]}, "minimum_exceeds_maximum", "PATCH")
    await refused(client, tenant, "/v1/plans/ok", {"minimum_amount": -5}, "validation_error", "PATCH")
    assert await call(client, tenant, "/v1/plans/ok", method="GET") == created
    patched = await call(client, tenant, "/v1/plans/ok", {"minimum_amount": None}, method="PATCH")
    assert patched["minimum_amount"] is None and patched["prices"] == created["prices"]
    patched = await call(client, tenant, "/v1/plans/ok", {"minimum_amount": 700}, method="PATCH")
    assert patched["minimum_amount"] == 700
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    await call(client, tenant, "/v1/subscriptions", {"customer": "c1", "plan": "ok"}, status=201)
    response = await client.patch("/v1/plans/ok", headers=tenant.headers(), json={"minimum_amount": 1})
    assert_problem(response, 409, "plan_in_use")


# --- a period cut short, and the preview --------------------------------------------------------


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_the_upcoming_invoice_previews_the_commitments_and_cancel_now_prorates_them(
    client: httpx.AsyncClient, make_tenant: MakeTenant, currency: str
) -> None:
    """The clock stands at 2026-11-21T12:00:00Z."""
    tenant = await make_tenant(name=f"Cut {currency}", currency=currency)
    await call(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, status=201)
    price = {"meter": "calls", "model": "per_unit", "unit_amount": UNIT, "maximum_amount": CAP}
    plan = {"code": "cut", "base_fee": BASE_FEE, "minimum_amount": MINIMUM, "prices": [price]}
    await call(client, tenant, "/v1/plans", plan, status=201)
    nov, now = "2026-11-01T00:00:00Z", "2026-11-21T12:00:00Z"
    await customer(client, tenant, "c1", "UTC", "cut", nov)
    await send(client, tenant, ("e1", "c1", "2026-11-05T00:00:00Z", 30000, "calls"))

    upcoming = await call(client, tenant, "/v1/customers/c1/upcoming-invoice", method="GET")
    december = "2026-12-01T00:00:00Z"
    assert shape(upcoming) == [
        ("base_fee", None, BASE_FEE, nov),
        ("usage", "calls", charge(30000, currency), nov),
        ("price_maximum", "calls", CAP - charge(30000, currency), nov),
        ("minimum_commitment", None, MINIMUM - BASE_FEE - CAP, nov),
    ]
    assert upcoming["period_end"] == december

    (sub,) = (await call(client, tenant, "/v1/subscriptions", method="GET"))["data"]
    await call(client, tenant, f"/v1/subscriptions/{sub['id']}/cancel", {"when": "now"})
    (final,) = (await invoices_of(client, tenant, "c1")).values()
    assert (final["period_end"], final["billing_reason"]) == (now, "subscription_cancel")
    fee, cap, floor = (prorate(x, nov, now, "UTC") for x in (BASE_FEE, CAP, MINIMUM))
    assert shape(final) == [
        ("base_fee", None, fee, nov),
        ("usage", "calls", charge(30000, currency), nov),
        ("price_maximum", "calls", cap - charge(30000, currency), nov),
        ("minimum_commitment", None, floor - fee - cap, nov),
    ]


# --- a plan change: the replaced subscription's late usage, on its successor's invoices ------------


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_late_usage_of_a_replaced_subscription_nets_its_prorated_true_up_round_after_round(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    """Each round's late line bills only what is new, although the earlier one is on another
    subscription's invoice, and the netting knows what is left of the true-up."""
    tenant = await make_tenant(name=f"Change {currency}", currency=currency)
    await call(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, status=201)
    price = {"meter": "calls", "model": "per_unit", "unit_amount": UNIT}
    await call(
        client, tenant, "/v1/plans", {"code": "old", "minimum_amount": MINIMUM, "prices": [price]}, status=201
    )
    await call(client, tenant, "/v1/plans", {"code": "new", "prices": [price]}, status=201)
    nov, t = "2026-11-01T00:00:00Z", "2026-11-21T12:00:00Z"  # t: the frozen clock
    await customer(client, tenant, "c1", "UTC", "old", nov)
    await send(client, tenant, ("e1", "c1", "2026-11-05T00:00:00Z", 3, "calls"))
    (old,) = (await call(client, tenant, "/v1/subscriptions", method="GET"))["data"]
    new = await call(client, tenant, f"/v1/subscriptions/{old['id']}", {"plan": "new"}, method="PATCH")
    assert new["starts_at"] == t

    (closing,) = (await invoices_of(client, tenant, "c1")).values()
    true_up = prorate(MINIMUM, nov, t, "UTC") - charge(3, currency)
    assert shape(closing) == [
        ("usage", "calls", charge(3, currency), nov),
        ("minimum_commitment", None, true_up, nov),
    ]
    clock.set(at("2026-11-22T13:00:00Z"))
    await run(client, tenant, "2026-11-22T13:00:00Z")
    left, billed = true_up, 3
    rounds = [
        (40, "2026-11-21T11:00:00Z", "2026-12-01T00:00:00Z", t),
        (20000, "2026-11-21T11:30:00Z", "2027-01-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    ]
    for n, (units, when, close_at, cycle_start) in enumerate(rounds):
        await send(client, tenant, (f"late{n}", "c1", when, units, "calls"))
        await run(client, tenant, close_at)
        cycle = (await invoices_of(client, tenant, "c1"))[cycle_start]
        assert cycle["subscription"] == new["id"]
        late = charge(billed + units, currency) - charge(billed, currency)
        netting = -min(left, late)
        (late_line,) = [x for x in cycle["lines"] if x["kind"] == "late_usage"]
        assert late_line["quantity"] == str(units)
        expected = [("late_usage", "calls", late, nov)] + (
            [("minimum_commitment", None, netting, nov)] if netting else []
        )
        assert [x for x in shape(cycle) if x[3] == nov] == expected
        clock.set(at(close_at) + timedelta(hours=25))
        await run(client, tenant, z(at(close_at) + timedelta(hours=25)))
        assert (await get_invoice(client, tenant, cycle["id"]))["status"] in ("open", "paid")
        left, billed = left + netting, billed + units
    everything = list((await invoices_of(client, tenant, "c1")).values())
    november = sum(x["amount"] for i in everything for x in i["lines"] if x["period_start"] == nov)
    assert november == max(prorate(MINIMUM, nov, t, "UTC"), charge(billed, currency))
