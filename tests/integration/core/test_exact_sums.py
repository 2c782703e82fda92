"""Sums of stored decimals over rollups are exact on both databases, at the extremes too (SQLite
keeps decimals as text and adds them in Python; PostgreSQL's NUMERIC is exact)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.core import money
from billing.core.context import AppContext
from billing.metering.models import Meter
from billing.metering.usage import whole_hour_tallies
from billing.metering.usage_models import UsageRollup

START = datetime(2026, 1, 1, tzinfo=UTC)


def meter(aggregation: str = "sum") -> Meter:
    return Meter(id=f"mtr_{uuid.uuid4().hex[:20]}", key="m", name="m", aggregation=aggregation)


async def store_hours(ctx: AppContext, tenant_id: str, meter_id: str, values: list[Decimal]) -> None:
    rows = [
        {
            "tenant_id": tenant_id,
            "customer_id": "cus_a",
            "meter_id": meter_id,
            "hour": START + timedelta(hours=n),
            "event_count": 1,
            "value_sum": value,
            "value_max": value,
            "latest_value": value,
            "latest_at": START + timedelta(hours=n),
            "latest_seq": n,
        }
        for n, value in enumerate(values)
    ]
    async with ctx.database.transaction() as session:
        for first in range(0, len(rows), 2000):
            await session.execute(sa.insert(UsageRollup), rows[first : first + 2000])


async def summed(ctx: AppContext, tenant_id: str, target: Meter, hours: int) -> tuple[Decimal, Decimal, int]:
    async with ctx.database.read() as session:
        tallies = await whole_hour_tallies(
            session, tenant_id, None, [target], (START, START + timedelta(hours=hours))
        )
    partial = tallies[("cus_a", target.id)].partial
    assert partial is not None
    return partial.value_sum, partial.value_max, partial.event_count


_values = st.decimals(
    min_value=Decimal(-(10**15)), max_value=Decimal(10**15), places=12, allow_nan=False, allow_infinity=False
).map(lambda d: money.parse_decimal(d))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_values, min_size=1, max_size=30))
async def test_the_sum_over_hours_is_the_exact_sum_of_the_stored_decimals(
    ctx: AppContext, values: list[Decimal]
) -> None:
    tenant_id, target = f"ten_{uuid.uuid4().hex[:20]}", meter()
    await store_hours(ctx, tenant_id, target.id, values)
    total, _, count = await summed(ctx, tenant_id, target, len(values))
    assert total == money.exact_sum(values) and count == len(values)


async def test_a_sum_beyond_64_bit_integers_is_still_exact(ctx: AppContext) -> None:
    # 10,000 hours of the largest value: about 10**19, past 64-bit integers and doubles' precision.
    largest = Decimal("999999999999999.999999999999")
    tenant_id, target = f"ten_{uuid.uuid4().hex[:20]}", meter()
    await store_hours(ctx, tenant_id, target.id, [largest] * 10_000)
    total, _, count = await summed(ctx, tenant_id, target, 10_000)
    assert total == largest * 10_000 and count == 10_000


async def test_max_meters_get_the_greatest_value_and_sum_meters_their_sum(ctx: AppContext) -> None:
    tenant_id, seats, calls = f"ten_{uuid.uuid4().hex[:20]}", meter("max"), meter("sum")
    values = [Decimal("7.5"), Decimal("-2"), Decimal("10.000000000001"), Decimal("3")]
    await store_hours(ctx, tenant_id, seats.id, values)
    await store_hours(ctx, tenant_id, calls.id, values)
    assert (await summed(ctx, tenant_id, seats, 4))[1] == Decimal("10.000000000001")
    assert (await summed(ctx, tenant_id, calls, 4))[0] == Decimal("18.500000000001")
