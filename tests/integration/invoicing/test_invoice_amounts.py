"""Invoice amounts recomputed independently: pricing models, rounding, proration, timezones, aggregations.

Black-box: everything goes through the HTTP API, and every expected amount comes from the small
oracle below (exact ``Fraction`` arithmetic, rounded half up once per line), never from billing/.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import httpx
import pytest

from billing.invoicing import run_tallies
from billing.web.auth import Scope
from tests.conftest import TenantHandle

EXPONENTS = {"USD": 2, "JPY": 0, "KWD": 3}
MakeTenant = Callable[..., Awaitable[TenantHandle]]

# --- oracle ---------------------------------------------------------------------------------------


def half_up(x: Fraction) -> int:
    """Round a non-negative exact amount to an integer, halves up."""
    assert x >= 0
    quotient, remainder = divmod(x.numerator, x.denominator)
    return quotient + (2 * remainder >= x.denominator)


def frac(text: str | None) -> Fraction | None:
    return None if text is None else Fraction(Decimal(text))


def tier_parts(price: dict, q: Fraction, exp: int) -> list[tuple[Fraction, Fraction, int]]:
    """(units in the tier, exact minor amount, flat charged) per tier of a graduated/volume price."""
    scale = Fraction(10) ** exp
    parts = []
    if price["model"] == "graduated":
        lower = Fraction(0)
        for tier in price["tiers"]:
            up_to = frac(tier["up_to"])
            inside = max((q if up_to is None else min(q, up_to)) - lower, Fraction(0))
            flat = tier["flat_amount"] if inside > 0 else 0
            parts.append((inside, inside * frac(tier["unit_amount"]) * scale + flat, flat))
            lower = up_to if up_to is not None else lower
        return parts
    chosen = next(i for i, t in enumerate(price["tiers"]) if t["up_to"] is None or q <= frac(t["up_to"]))
    for i, tier in enumerate(price["tiers"]):
        units = q if i == chosen and q > 0 else Fraction(0)
        flat = tier["flat_amount"] if units > 0 else 0
        parts.append((units, units * frac(tier["unit_amount"]) * scale + flat, flat))
    return parts


def charge(price: dict, q: Fraction, exp: int) -> int:
    """The line amount in minor units: the exact amount, rounded half up exactly once."""
    if q <= 0:
        return 0
    if price["model"] == "per_unit":
        return half_up(q * frac(price["unit_amount"]) * Fraction(10) ** exp)
    if price["model"] == "package":
        packages = -(-q // frac(price["package_size"]))
        return packages * price["package_amount"]
    return half_up(sum((part[1] for part in tier_parts(price, q, exp)), Fraction(0)))


def local_month_bounds(at: datetime, tz: str) -> tuple[datetime, datetime]:
    local = at.astimezone(ZoneInfo(tz))
    nxt = (local.year + local.month // 12, local.month % 12 + 1)
    start = datetime(local.year, local.month, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    return start, datetime(*nxt, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def prorated(base_fee: int, start: datetime, end: datetime, tz: str) -> int:
    month_start, month_end = local_month_bounds(start, tz)
    return half_up(
        Fraction(base_fee)
        * Fraction(int((end - start).total_seconds()), int((month_end - month_start).total_seconds()))
    )


def aggregate(aggregation: str, events: list[dict], start: datetime, end: datetime) -> Fraction:
    """A period's quantity; ``events`` in the order they were accepted (for ``latest`` ties)."""
    inside = [e for e in events if start <= ts(e["timestamp"]) < end]
    if aggregation == "count":
        return Fraction(len(inside))
    if aggregation == "unique_count":
        return Fraction(len({e["properties"]["user_id"] for e in inside}))
    if not inside:
        return Fraction(0)
    if aggregation == "max":
        return max(frac(e["value"]) for e in inside)
    if aggregation == "latest":
        order = {id(e): n for n, e in enumerate(inside)}
        return frac(max(inside, key=lambda e: (ts(e["timestamp"]), order[id(e)]))["value"])
    return sum((frac(e["value"]) for e in inside), Fraction(0))


# --- API helpers ----------------------------------------------------------------------------------


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def post(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: object, status: int = 200
) -> dict:
    response = await client.post(path, headers=tenant.headers(), json=body)
    assert response.status_code == status, response.text
    return response.json()


async def send(client: httpx.AsyncClient, tenant: TenantHandle, events: list[dict]) -> None:
    for i in range(0, len(events), 1000):
        body = await post(client, tenant, "/v1/events/batch", {"events": events[i : i + 1000]})
        assert body["accepted"] == len(events[i : i + 1000]), body


async def run(client: httpx.AsyncClient, tenant: TenantHandle, at: str) -> dict:
    return await post(client, tenant, "/v1/billing/run", {"at": at})


async def customer_invoices(
    client: httpx.AsyncClient, tenant: TenantHandle, customer: str
) -> dict[str, dict]:
    """The customer's invoices keyed by period_start."""
    params = {"customer": customer, "limit": 100}
    response = await client.get("/v1/invoices", headers=tenant.headers(), params=params)
    assert response.status_code == 200, response.text
    return {inv["period_start"]: inv for inv in response.json()["data"]}


async def add_customer(
    client: httpx.AsyncClient, tenant: TenantHandle, external_id: str, tz: str, plan: str, starts_at: str
) -> dict:
    await post(client, tenant, "/v1/customers", {"external_id": external_id, "timezone": tz}, 201)
    body = {"customer": external_id, "plan": plan, "starts_at": starts_at}
    return await post(client, tenant, "/v1/subscriptions", body, 201)


def usage(invoice: dict) -> dict[str, dict]:
    lines = {line["meter"]: line for line in invoice["lines"] if line["kind"] == "usage"}
    assert len(lines) == sum(line["kind"] == "usage" for line in invoice["lines"]), invoice["lines"]
    return lines


def base_fee(invoice: dict) -> int | None:
    fees = [line for line in invoice["lines"] if line["kind"] == "base_fee"]
    assert len(fees) <= 1
    if fees:
        assert (fees[0]["quantity"], fees[0]["meter"]) == ("1", None)
    return fees[0]["amount"] if fees else None


def assert_totals(invoice: dict) -> None:
    lines_sum = sum(line["amount"] for line in invoice["lines"])
    assert invoice["subtotal"] == invoice["total"] == lines_sum, invoice


def same_quantity(text: str, expected: Fraction) -> bool:
    return "e" not in text.lower() and Fraction(Decimal(text)) == expected


# --- 1. pricing models at tier edges, in three currencies ---------------------------------------

PRICES = [
    {"meter": "units", "model": "per_unit", "unit_amount": "0.123456789012"},
    {
        "meter": "grad",
        "model": "graduated",
        "tiers": [
            {"up_to": "10", "unit_amount": "0.00155", "flat_amount": 1},
            {"up_to": "1000", "unit_amount": "0.005", "flat_amount": 0},
            {"up_to": None, "unit_amount": "0.000000000001", "flat_amount": 2},
        ],
    },
    {
        "meter": "vol",
        "model": "volume",
        "tiers": [
            {"up_to": "10", "unit_amount": "0.0015", "flat_amount": 3},
            {"up_to": "1000", "unit_amount": "0.0005", "flat_amount": 5},
            {"up_to": None, "unit_amount": "0.000000000001", "flat_amount": 0},
        ],
    },
    {"meter": "pkg", "model": "package", "package_size": "2.5", "package_amount": 7},
]
QUANTITIES = [
    "0",
    "10",
    "11",
    "10.5",
    "10.1",
    "108",
    "1000",
    "1001",
    "1000.5",
    "2.5",
    "2.500000000001",
    "0.000000000001",
    "333.333333333333",
    "987654321987.654321987654",
]
BASE_FEE = 4999


def split(q: str) -> list[str]:
    """Two event values summing to q exactly (12 fractional digits at most), or q alone."""
    whole = Decimal(q)
    first = (whole / 3).quantize(Decimal("1E-12"), rounding="ROUND_DOWN")
    if first <= 0:
        return [q]
    return [format(first, "f"), format(whole - first, "f")]


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
async def test_every_pricing_model_is_priced_exactly_and_rounded_once_per_line(
    client: httpx.AsyncClient, make_tenant: MakeTenant, currency: str
) -> None:
    exp = EXPONENTS[currency]
    tenant = await make_tenant(name=f"Money {currency}", currency=currency)
    for meter in ("units", "grad", "vol", "pkg"):
        await post(client, tenant, "/v1/meters", {"key": meter, "aggregation": "sum"}, 201)
    plan = await post(
        client, tenant, "/v1/plans", {"code": "all", "base_fee": BASE_FEE, "prices": PRICES}, 201
    )
    assert plan["currency"] == currency
    events = []
    for n, q in enumerate(QUANTITIES):
        await add_customer(client, tenant, f"c{n}", "UTC", "all", "2026-10-01T00:00:00Z")
        for price in PRICES:
            for k, value in enumerate(split(q)):
                events.append(
                    {
                        "id": f"e{n}-{price['meter']}-{k}",
                        "customer": f"c{n}",
                        "meter": price["meter"],
                        "timestamp": f"2026-10-{10 + k}T12:00:00Z",
                        "value": value,
                    }
                )
    await send(client, tenant, events)
    result = await run(client, tenant, "2026-11-01T00:00:00Z")
    assert result["invoices_created"] == len(QUANTITIES)

    rounding_differs = False
    drafts = {}
    for n, q in enumerate(QUANTITIES):
        (draft,) = (await customer_invoices(client, tenant, f"c{n}")).values()
        drafts[n] = draft
        assert (draft["status"], draft["currency"]) == ("draft", currency)
        assert (draft["period_start"], draft["period_end"]) == (
            "2026-10-01T00:00:00Z",
            "2026-11-01T00:00:00Z",
        )
        assert base_fee(draft) == BASE_FEE  # a whole month is exactly the base fee
        lines = usage(draft)
        assert set(lines) == {p["meter"] for p in PRICES}
        expected_total = BASE_FEE
        for price in PRICES:
            line, quantity = lines[price["meter"]], frac(q)
            assert same_quantity(line["quantity"], quantity), (q, line)
            expected = charge(price, quantity, exp)
            assert line["amount"] == expected, (currency, q, price["model"], line)
            expected_total += expected
            if price["model"] in ("graduated", "volume"):
                parts = tier_parts(price, quantity, exp)
                assert len(line["tiers"]) == len(parts), line
                for shown, (units, exact, flat) in zip(line["tiers"], parts, strict=True):
                    assert same_quantity(shown["quantity"], units), (q, shown)
                    assert (shown["flat_amount"], shown["amount"]) == (flat, half_up(exact)), (q, shown)
                if sum(half_up(p[1]) for p in parts) != expected:
                    rounding_differs = True
        assert_totals(draft)
        assert draft["total"] == expected_total, (currency, q)
    # The quantities include a case where rounding each tier would give another line amount.
    assert rounding_differs

    big = drafts[len(QUANTITIES) - 1]
    finance = tenant.headers(Scope.FINANCE)
    response = await client.post(f"/v1/invoices/{big['id']}/finalize", headers=finance)
    assert response.status_code == 200, response.text
    final = (await client.get(f"/v1/invoices/{big['id']}", headers=finance)).json()
    assert final["status"] == "open" and final["number"]
    assert final["total"] == final["amount_due"] == big["total"]
    assert [(ln["kind"], ln["meter"], ln["quantity"], ln["amount"]) for ln in final["lines"]] == [
        (ln["kind"], ln["meter"], ln["quantity"], ln["amount"]) for ln in big["lines"]
    ]


# --- 2. proration of the base fee ----------------------------------------------------------------

# customer: (timezone, plan, starts_at, cancel at or None, expected periods up to 2027-01-01)
PRORATION = {
    "mid": ("UTC", "pro", "2026-10-15T00:00:00Z", None, ["2026-11-01", "2026-12-01", "2027-01-01"]),
    "cancel": (
        "UTC",
        "pro",
        "2026-09-01T00:00:00Z",
        "2026-12-10T06:00:00Z",
        ["2026-10-01", "2026-11-01", "2026-12-01", "2026-12-10T06:00:00Z"],
    ),
    "same": ("UTC", "pro", "2026-11-03T10:20:30Z", "2026-11-25T01:02:03Z", ["2026-11-25T01:02:03Z"]),
    "tie": ("UTC", "tie", "2026-11-16T00:00:00Z", None, ["2026-12-01", "2027-01-01"]),  # 33 x 1/2 = 16.5
    # Canceled two minutes from now (the frozen clock): the last period ends then.
    "soon": ("UTC", "pro", "2026-11-01T00:00:00Z", "2026-11-21T12:02:00Z", ["2026-11-21T12:02:00Z"]),
    # Canceled exactly at the end of a local month: full months, no empty December period.
    "ist-edge": (
        "Asia/Kolkata",
        "pro",
        "2026-09-30T18:30:00Z",
        "2026-11-30T18:30:00Z",
        ["2026-10-31T18:30:00Z", "2026-11-30T18:30:00Z"],
    ),
    "ist-mid": (
        "Asia/Kolkata",
        "pro",
        "2026-11-09T18:30:00Z",
        "2026-11-30T18:00:00Z",
        ["2026-11-30T18:00:00Z"],
    ),
}


def instant(text: str) -> datetime:
    return ts(text if "T" in text else f"{text}T00:00:00Z")


async def test_base_fee_is_prorated_by_seconds_of_the_calendar_month(
    client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(name="Prorate", currency="USD")
    await post(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, 201)
    prices = [{"meter": "calls", "model": "per_unit", "unit_amount": "0.01"}]
    await post(client, tenant, "/v1/plans", {"code": "pro", "base_fee": 99999, "prices": prices}, 201)
    await post(client, tenant, "/v1/plans", {"code": "tie", "base_fee": 33}, 201)
    for name, (tz, plan, starts_at, cancel_at, _) in PRORATION.items():
        sub = await add_customer(client, tenant, name, tz, plan, starts_at)
        if cancel_at:
            canceled = await post(client, tenant, f"/v1/subscriptions/{sub['id']}/cancel", {"at": cancel_at})
            assert canceled["cancel_at"] == cancel_at
    # Usage one second either side of the cancellation: the second event is no longer covered.
    edge = [
        {"id": f"soon-{t}", "customer": "soon", "meter": "calls", "timestamp": t, "value": "3"}
        for t in ("2026-11-21T12:01:59Z", "2026-11-21T12:02:00Z")
    ]
    body = await post(client, tenant, "/v1/events/batch", {"events": edge})
    assert [(r["status"], r.get("code")) for r in body["results"]] == [
        ("accepted", None),
        ("rejected", "no_subscription"),
    ]
    await run(client, tenant, "2027-01-01T00:00:00Z")
    await run(client, tenant, "2027-02-01T00:00:00Z")  # nothing more for the ended subscriptions
    for name, (tz, plan, starts_at, cancel_at, ends) in PRORATION.items():
        fee = 33 if plan == "tie" else 99999
        invoices = await customer_invoices(client, tenant, name)
        bounds = [ts(starts_at), *map(instant, ends)]
        if cancel_at is None:
            bounds.append(ts("2027-02-01T00:00:00Z"))
        assert sorted(invoices) == [iso(start) for start in bounds[:-1]], (name, sorted(invoices))
        for start, end in itertools.pairwise(bounds):
            invoice = invoices[iso(start)]
            assert invoice["period_end"] == iso(end), (name, invoice["period_end"])
            assert base_fee(invoice) == prorated(fee, start, end, tz), (name, iso(start))
            assert_totals(invoice)
    # Spot checks of the oracle itself against hand computations.
    assert (
        base_fee((await customer_invoices(client, tenant, "mid"))["2026-10-15T00:00:00Z"]) == 54838
    )  # 17/31
    assert base_fee((await customer_invoices(client, tenant, "mid"))["2026-11-01T00:00:00Z"]) == 99999
    dec = (await customer_invoices(client, tenant, "cancel"))["2026-12-01T00:00:00Z"]
    assert base_fee(dec) == half_up(Fraction(99999 * (9 * 86400 + 6 * 3600), 31 * 86400)) == 29838
    assert base_fee((await customer_invoices(client, tenant, "tie"))["2026-11-16T00:00:00Z"]) == 17
    assert [base_fee(i) for i in (await customer_invoices(client, tenant, "ist-edge")).values()] == [
        99999
    ] * 2
    (soon,) = (await customer_invoices(client, tenant, "soon")).values()
    assert same_quantity(usage(soon)["calls"]["quantity"], Fraction(3))
    assert soon["total"] == 3 + half_up(Fraction(99999 * (20 * 86400 + 12 * 3600 + 120), 30 * 86400))


# --- 3. timezones: period edges and events one second either side -------------------------------

TIMEZONES = {
    "berlin": "Europe/Berlin",
    "kolkata": "Asia/Kolkata",
    "kathmandu": "Asia/Kathmandu",
    "newyork": "America/New_York",
}


async def test_periods_follow_the_customers_local_calendar_months(
    client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(name="Zones", currency="USD")
    await post(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, 201)
    prices = [{"meter": "calls", "model": "per_unit", "unit_amount": "1"}]
    await post(client, tenant, "/v1/plans", {"code": "zone", "base_fee": 7001, "prices": prices}, 201)
    events: dict[str, list[dict]] = {}
    bounds: dict[str, list[datetime]] = {}
    for name, tz in TIMEZONES.items():
        zone = ZoneInfo(tz)
        starts = [datetime(2026, m, 1, tzinfo=zone).astimezone(UTC) for m in (9, 10, 11, 12)]
        bounds[name] = starts
        sub = await add_customer(client, tenant, name, tz, "zone", iso(starts[0]))
        assert sub["timezone"] == tz
        events[name] = [
            {
                "id": f"{name}-{i}-{side}",
                "customer": name,
                "meter": "calls",
                "timestamp": iso(edge + timedelta(seconds=side)),
                "value": str(10 ** (2 * i + (side + 1))),
            }
            for i, edge in enumerate(starts[1:3])
            for side in (-1, 0)
        ]
        events[name].append(
            {
                "id": f"{name}-first",
                "customer": name,
                "meter": "calls",
                "timestamp": iso(starts[0]),
                "value": "5",
            }
        )
        await send(client, tenant, events[name])
    assert [iso(b) for b in bounds["berlin"][2:]] == ["2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z"]
    assert iso(bounds["kolkata"][2]) == "2026-10-31T18:30:00Z"
    assert iso(bounds["kathmandu"][2]) == "2026-10-31T18:15:00Z"
    assert [iso(b) for b in bounds["newyork"][2:]] == ["2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z"]
    # A New York customer whose first period starts at local midnight of Nov 15, after the DST change.
    await add_customer(client, tenant, "ny-late", "America/New_York", "zone", "2026-11-15T05:00:00Z")
    # A Berlin customer from Oct 15 local: October there has 745 hours (the clocks go back on Oct 25).
    await add_customer(client, tenant, "berlin-mid", "Europe/Berlin", "zone", "2026-10-14T22:00:00Z")

    await run(client, tenant, "2026-12-01T04:59:59Z")
    for name in ("newyork", "ny-late"):
        assert "2026-11-01T04:00:00Z" not in await customer_invoices(client, tenant, name)
        assert "2026-11-15T05:00:00Z" not in await customer_invoices(client, tenant, name)
    await run(client, tenant, "2026-12-01T05:00:00Z")

    for name, tz in TIMEZONES.items():
        invoices = await customer_invoices(client, tenant, name)
        starts = bounds[name]
        assert sorted(invoices) == [iso(s) for s in starts[:3]], (name, sorted(invoices))
        for start, end in itertools.pairwise(starts):
            invoice = invoices[iso(start)]
            assert invoice["period_end"] == iso(end)
            line = usage(invoice)["calls"]
            expected = aggregate("sum", events[name], start, end)
            assert same_quantity(line["quantity"], expected), (name, iso(start), line["quantity"], expected)
            assert line["amount"] == half_up(expected * 100)
            assert base_fee(invoice) == 7001, (name, tz, iso(start))  # whole local months
            assert_totals(invoice)
    # November in New York has 721 hours (the clocks go back on Nov 1).
    ny = await customer_invoices(client, tenant, "newyork")
    nov = ny["2026-11-01T04:00:00Z"]
    assert ts(nov["period_end"]) - ts(nov["period_start"]) == timedelta(hours=721)
    late = (await customer_invoices(client, tenant, "ny-late"))["2026-11-15T05:00:00Z"]
    assert late["period_end"] == "2026-12-01T05:00:00Z"
    assert base_fee(late) == half_up(Fraction(7001 * 384, 721)) == 3729
    berlin = (await customer_invoices(client, tenant, "berlin-mid"))["2026-10-14T22:00:00Z"]
    assert berlin["period_end"] == "2026-10-31T23:00:00Z"
    assert base_fee(berlin) == half_up(Fraction(7001 * (17 * 24 + 1), 745)) == 3844
    assert base_fee(late) == prorated(
        7001, ts("2026-11-15T05:00:00Z"), ts("2026-12-01T05:00:00Z"), "America/New_York"
    )


# --- 4. aggregations across hours and the period boundary ---------------------------------------

AGG_METERS = {
    "peak": ("max", "0.015"),
    "users": ("unique_count", "1.25"),
    "seats": ("latest", "2.000000000001"),
    "requests": ("count", "0.001"),
}
# Offsets from the November boundary, values and user ids of the events of every meter.
OFFSETS = [
    timedelta(days=-26),
    timedelta(days=-25, hours=-23, minutes=-30),
    timedelta(hours=-1),
    timedelta(minutes=-15),
    timedelta(seconds=-1),
    timedelta(0),
    timedelta(seconds=1),
    timedelta(minutes=30),
    timedelta(minutes=59, seconds=59),
    timedelta(days=2, hours=3),
    timedelta(days=19, hours=1),
]
VALUES = ["3.5", "7.000000000001", "2", "0.25", "7.000000000002", "1", "9.999999999999", "4"]
VALUES += ["0.000000000001", "12.5", "0.5"]
USERS = ["u1", "u2", "u1", "u3", "u1", "u1", "u4", "u2", "u2", "u1", "u5"]


def agg_event(key: str, name: str, at: datetime, value: str, user: str) -> dict:
    return {
        "id": f"{key}-{name}",
        "customer": "agg",
        "meter": key,
        "timestamp": iso(at),
        "value": value,
        "properties": {"user_id": user},
    }


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu"])
@pytest.mark.parametrize("tenant_wide", [True, False], ids=["tenant-wide-read", "batch-read"])
async def test_max_unique_latest_and_count_meters_are_aggregated_per_period(
    client: httpx.AsyncClient,
    make_tenant: MakeTenant,
    tz: str,
    tenant_wide: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run reads a small tenant's whole period at once; a tenant above the limit, per batch.
    monkeypatch.setattr(run_tallies, "TENANT_WIDE_LIMIT", run_tallies.TENANT_WIDE_LIMIT if tenant_wide else 0)
    tenant = await make_tenant(name="Aggregate", currency="USD")
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json={"grace_period_hours": 744})
    assert response.status_code == 200, response.text
    prices = []
    for key, (aggregation, unit_amount) in AGG_METERS.items():
        meter = {"key": key, "aggregation": aggregation}
        if aggregation == "unique_count":
            meter["unique_property"] = "user_id"
        await post(client, tenant, "/v1/meters", meter, 201)
        prices.append({"meter": key, "model": "per_unit", "unit_amount": unit_amount})
    await post(client, tenant, "/v1/plans", {"code": "agg", "base_fee": 0, "prices": prices}, 201)
    zone = ZoneInfo(tz)
    oct_start, nov_start, dec_start = (
        datetime(2026, m, 1, tzinfo=zone).astimezone(UTC) for m in (10, 11, 12)
    )
    await add_customer(client, tenant, "agg", tz, "agg", iso(oct_start))
    batch = []
    for key in AGG_METERS:
        for i, offset in enumerate(OFFSETS):
            # Each meter gets the values in another order, so that max/latest are not the same event.
            value = VALUES[(i * 3 + len(key)) % len(VALUES)]
            batch.append(agg_event(key, f"{i:02}", nov_start + offset, value, USERS[i]))
    batch.reverse()  # newest first: latest is the greatest timestamp, not the last one sent
    await send(client, tenant, batch)
    # Same timestamp as the last October event, in a later batch: the latest is the one accepted last.
    tie = [agg_event(key, "00-tie", nov_start - timedelta(seconds=1), "6.5", "u6") for key in AGG_METERS]
    await send(client, tenant, tie)
    sent = batch + tie

    async def check(drafts: dict[str, dict]) -> None:
        assert sorted(drafts) == [iso(oct_start), iso(nov_start)]
        for start, end in ((oct_start, nov_start), (nov_start, dec_start)):
            invoice = drafts[iso(start)]
            assert invoice["status"] == "draft"
            lines = usage(invoice)
            expected_total = 0
            for key, (aggregation, unit_amount) in AGG_METERS.items():
                expected = aggregate(aggregation, [e for e in sent if e["meter"] == key], start, end)
                line = lines[key]
                assert same_quantity(line["quantity"], expected), (
                    key,
                    iso(start),
                    line["quantity"],
                    expected,
                )
                assert line["amount"] == half_up(expected * frac(unit_amount) * 100), (key, iso(start), line)
                expected_total += line["amount"]
            assert base_fee(invoice) is None
            assert_totals(invoice)
            assert invoice["total"] == expected_total

    await run(client, tenant, iso(dec_start))
    await check(await customer_invoices(client, tenant, "agg"))
    seats = [e for e in sent if e["meter"] == "seats"]
    assert aggregate("latest", seats, oct_start, nov_start) == Fraction("6.5")
    users = [e for e in sent if e["meter"] == "users"]
    assert [
        aggregate("unique_count", users, *p) for p in ((oct_start, nov_start), (nov_start, dec_start))
    ] == [4, 4]

    # Late events into both drafts, around the boundary (inside the hour it cuts in Kathmandu).
    late = []
    for key in AGG_METERS:
        late.append(agg_event(key, "late-oct", nov_start - timedelta(seconds=2), "50.5", "u9"))
        late.append(agg_event(key, "late-nov", nov_start + timedelta(minutes=10), "60.000000000001", "u1"))
    await send(client, tenant, late)
    sent += late
    result = await run(client, tenant, iso(dec_start))
    assert (result["invoices_created"], result["drafts_recomputed"]) == (0, 2)
    await check(await customer_invoices(client, tenant, "agg"))
