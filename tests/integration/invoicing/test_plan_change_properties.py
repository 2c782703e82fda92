"""A plan change at a random instant, with a random stream of usage, in timezones with whole,
half and quarter hour offsets and across daylight saving changes: every unit posted is billed
exactly once, on the closing invoice or the successor's, at the amounts of an independent
computation."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.core.clock import FrozenClock
from tests.conftest import TenantHandle
from tests.integration.invoicing.lifecycle_helpers import (
    BASIC_FEE,
    BASIC_UNIT,
    PRO_FEE,
    PRO_UNIT,
    assert_total,
    fetch,
    invoices_of,
    lines_of,
    make_shop,
    month_of,
    patch,
    prorated,
    run,
    send,
    subscribe,
    usage_amount,
    z,
)

# (timezone, a local instant in the month, the local day the change falls on or None for any)
CASES = [
    ("UTC", datetime(2026, 11, 15), None),
    ("America/New_York", datetime(2026, 11, 15), datetime(2026, 11, 1)),  # 25 hours: clocks go back
    ("America/New_York", datetime(2027, 3, 15), datetime(2027, 3, 14)),  # 23 hours: clocks go forward
    ("Asia/Kolkata", datetime(2026, 11, 15), None),  # +05:30
    ("Asia/Kathmandu", datetime(2026, 11, 15), None),  # +05:45
]
_examples = itertools.count()


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[str, datetime, datetime, datetime, list[tuple[datetime, int]], bool, int]:
    timezone, inside, day = draw(st.sampled_from(CASES))
    zone = ZoneInfo(timezone)
    start, end = month_of(inside.replace(tzinfo=zone), timezone)
    if day is None:
        low, high = start, end
    else:
        low = day.replace(tzinfo=zone).astimezone(start.tzinfo)
        high = (day + timedelta(days=1)).replace(tzinfo=zone).astimezone(start.tzinfo)
    span = int((high - low).total_seconds())
    change = low + timedelta(seconds=draw(st.integers(1, span - 1)))
    # Events anywhere in the period, with some exactly at and right around the change (a change in
    # the period's last second has its "right after" at the period's end: the next period's).
    seconds = st.one_of(
        st.integers(0, int((end - start).total_seconds()) - 1).map(lambda s: start + timedelta(seconds=s)),
        st.integers(-1, 1).map(lambda s: change + timedelta(seconds=s)).filter(lambda t: t < end),
    )
    events = draw(st.lists(st.tuples(seconds, st.integers(1, 1000)), max_size=12))
    return timezone, start, end, change, events, draw(st.booleans()), draw(st.integers(1, 3))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
async def test_a_plan_change_bills_every_unit_once_at_the_oracles_amounts(
    client: httpx.AsyncClient,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
    clock: FrozenClock,
    scenario: tuple[str, datetime, datetime, datetime, list[tuple[datetime, int]], bool, int],
) -> None:
    timezone, start, end, change, events, backdated, seats = scenario
    n = next(_examples)
    clock.set(start)
    tenant = await make_tenant(f"Shop {n}")
    await make_shop(client, tenant, {"c": timezone})
    old = await subscribe(client, tenant, "c", "basic", z(start), quantity=seats)
    named = [(f"e{n}-{i}", z(t), v) for i, (t, v) in enumerate(events)]
    before = [e for e, (t, _) in zip(named, events, strict=True) if t < change]
    after = [e for e, (t, _) in zip(named, events, strict=True) if t >= change]
    if backdated:
        clock.set(end)
        assert {s for s, _ in await send(client, tenant, "c", named)} <= {"accepted"}
        response = await patch(client, tenant, old["id"], {"plan": "pro", "when": z(change)})
    else:
        clock.set(change)
        assert {s for s, _ in await send(client, tenant, "c", before)} <= {"accepted"}
        response = await patch(client, tenant, old["id"], {"plan": "pro"})
        clock.set(end)
        assert {s for s, _ in await send(client, tenant, "c", after)} <= {"accepted"}
    assert response.status_code == 200, response.text
    new = response.json()
    assert (new["starts_at"], (await fetch(client, tenant, old["id"]))["ended_at"]) == (z(change), z(change))
    await run(client, tenant, z(end))
    clock.set(end + timedelta(hours=25))
    await run(client, tenant, z(end + timedelta(hours=25)))
    (closing,) = await invoices_of(client, tenant, old["id"])
    (cycle,) = await invoices_of(client, tenant, new["id"])
    used_before = Decimal(sum(v for t, v in events if t < change))
    used_after = Decimal(sum(v for t, v in events if t >= change))
    for invoice, fee, unit, (lo, hi), used in (
        (closing, BASIC_FEE, BASIC_UNIT, (start, change), used_before),
        (cycle, PRO_FEE, PRO_UNIT, (change, end), used_after),
    ):
        finalized = "paid" if invoice["total"] == 0 else "open"
        assert (invoice["status"], invoice["period_start"], invoice["period_end"]) == (
            finalized,
            z(lo),
            z(hi),
        )
        assert [(x["quantity"], x["amount"]) for x in lines_of(invoice, "base_fee")] == [
            (str(seats), prorated(fee, seats, lo, hi, timezone))
        ]
        (usage,) = lines_of(invoice, "usage")
        assert (Decimal(usage["quantity"]), usage["amount"]) == (used, usage_amount(used, unit))
        assert_total(invoice)
    billed = sum(Decimal(line["quantity"]) for i in (closing, cycle) for line in lines_of(i, "usage"))
    assert billed == sum(v for _, v in events)
