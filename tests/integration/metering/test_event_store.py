"""The hot write path of ingestion stores exactly what the models would: events, rollups, distinct values.

``event_store`` hands the drivers plain values and its own SQL, so these tests read every row
back through the SQLAlchemy models and compare it with what the events say, folded here
independently of the service's code.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.core.context import AppContext
from billing.metering.event_store import NewEvent, store
from billing.metering.usage_models import UsageEvent, UsageRollup, UsageUniqueValue

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOUR = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def new_event(
    event_id: str,
    value: str = "1",
    at: datetime = HOUR,
    *,
    customer: str = "cus_a",
    meter: str = "mtr_sum",
    properties: dict[str, Any] | None = None,
    unique: str | None = None,
) -> NewEvent:
    text = None if properties is None else msgspec.json.encode(properties).decode()
    return NewEvent(event_id, customer, meter, at, Decimal(value), text, f"hash-{event_id}", unique)


def tenant() -> str:
    return f"ten_{uuid.uuid4().hex[:20]}"


async def stored_events(ctx: AppContext, tenant_id: str) -> dict[str, UsageEvent]:
    async with ctx.database.read() as session:
        rows = await session.scalars(sa.select(UsageEvent).where(UsageEvent.tenant_id == tenant_id))
        return {row.event_id: row for row in rows}


async def stored_rollups(ctx: AppContext, tenant_id: str) -> dict[tuple[str, str, datetime], tuple]:
    async with ctx.database.read() as session:
        rows = await session.scalars(sa.select(UsageRollup).where(UsageRollup.tenant_id == tenant_id))
        return {
            (r.customer_id, r.meter_id, r.hour): (
                r.event_count,
                r.value_sum,
                r.value_max,
                r.latest_value,
                r.latest_at,
                r.latest_seq,
            )
            for r in rows
        }


async def stored_uniques(ctx: AppContext, tenant_id: str) -> set[tuple[str, str, datetime, str]]:
    table = UsageUniqueValue.__table__
    async with ctx.database.read() as session:
        rows = await session.execute(
            sa.select(table.c.customer_id, table.c.meter_id, table.c.hour, table.c.value).where(
                table.c.tenant_id == tenant_id
            )
        )
        return {tuple(row) for row in rows}  # type: ignore[misc]


def expected_rollups(events: list[NewEvent], seqs: dict[str, int]) -> dict[tuple[str, str, datetime], tuple]:
    """The rollups folded from scratch: count, exact sum, max, and the latest by (timestamp, seq)."""
    groups: dict[tuple[str, str, datetime], list[NewEvent]] = defaultdict(list)
    for e in events:
        groups[(e.customer_id, e.meter_id, e.timestamp.replace(minute=0, second=0, microsecond=0))].append(e)
    folded = {}
    for key, members in groups.items():
        latest = max(members, key=lambda e: (e.timestamp, seqs[e.event_id]))
        folded[key] = (
            len(members),
            sum((e.value for e in members), Decimal(0)),
            max(e.value for e in members),
            latest.value,
            latest.timestamp,
            seqs[latest.event_id],
        )
    return folded


async def store_batch(ctx: AppContext, tenant_id: str, events: list[NewEvent]) -> dict[str, int]:
    async with ctx.database.transaction() as session:
        return await store(session, tenant_id, sorted(events, key=lambda e: e.event_id), NOW)


async def test_stored_events_read_back_through_the_model_unchanged(ctx: AppContext) -> None:
    tenant_id = tenant()
    events = [
        new_event("big", "999999999999999.999999999999", HOUR + timedelta(minutes=59, seconds=59)),
        new_event("tiny", "0.000000000001", HOUR + timedelta(microseconds=1)),
        new_event("neg", "-1000000000000000", HOUR + timedelta(hours=1)),
        new_event("props", "2.5", HOUR, properties={"région": "eu", "n": [1, {"x": None}], "ok": True}),
        new_event("none", "0", HOUR + timedelta(seconds=30, microseconds=123456)),
    ]
    seqs = await store_batch(ctx, tenant_id, events)
    assert set(seqs) == {e.event_id for e in events}
    rows = await stored_events(ctx, tenant_id)
    for e in events:
        row = rows[e.event_id]
        assert (row.customer_id, row.meter_id, row.timestamp, row.value, row.properties) == (
            e.customer_id,
            e.meter_id,
            e.timestamp,
            e.value,
            None if e.properties is None else msgspec.json.decode(e.properties),
        )
        assert (row.payload_hash, row.received_at, row.seq, row.invoice_id) == (
            e.payload_hash,
            NOW,
            seqs[e.event_id],
            None,
        )
    # The stored timestamps compare with bound datetimes as the model's type binds them.
    async with ctx.database.read() as session:
        in_first_hour = await session.scalars(
            sa.select(UsageEvent.event_id).where(
                UsageEvent.tenant_id == tenant_id,
                UsageEvent.timestamp >= HOUR,
                UsageEvent.timestamp < HOUR + timedelta(hours=1),
            )
        )
        assert set(in_first_hour) == {"big", "tiny", "props", "none"}


async def test_rollups_fold_every_new_event_exactly_across_batches(ctx: AppContext) -> None:
    tenant_id = tenant()
    first = [
        new_event("a1", "0.1", HOUR + timedelta(minutes=10)),
        new_event("a2", "0.2", HOUR + timedelta(minutes=50)),
        new_event("b1", "7", HOUR + timedelta(minutes=5), meter="mtr_max"),
    ]
    # The second batch repeats a1 (ignored) and brings an earlier and a same-instant later event.
    second = [
        new_event("a1", "100", HOUR + timedelta(minutes=10)),
        new_event("a3", "999999999999999.999999999999", HOUR),
        new_event("a4", "5", HOUR + timedelta(minutes=50)),
        new_event("b2", "3", HOUR + timedelta(minutes=6), meter="mtr_max"),
    ]
    seqs = await store_batch(ctx, tenant_id, first)
    again = await store_batch(ctx, tenant_id, second)
    assert set(again) == {"a3", "a4", "b2"}
    seqs |= again
    accepted = first + second[1:]
    assert await stored_rollups(ctx, tenant_id) == expected_rollups(accepted, seqs)
    # a2 and a4 share the latest instant: the one stored last (greater seq) is the latest.
    assert (await stored_rollups(ctx, tenant_id))[("cus_a", "mtr_sum", HOUR)][3] == Decimal(5)


async def test_distinct_values_are_stored_once_per_hour(ctx: AppContext) -> None:
    tenant_id = tenant()
    later = HOUR + timedelta(hours=1)
    events = [
        new_event("u1", at=HOUR, meter="mtr_users", unique="ann"),
        new_event("u2", at=HOUR + timedelta(minutes=1), meter="mtr_users", unique="ann"),
        new_event("u3", at=HOUR, meter="mtr_users", unique="42"),
        new_event("u4", at=later, meter="mtr_users", unique="ann"),
    ]
    await store_batch(ctx, tenant_id, events[:2])
    await store_batch(ctx, tenant_id, events)
    assert await stored_uniques(ctx, tenant_id) == {
        ("cus_a", "mtr_users", HOUR, "ann"),
        ("cus_a", "mtr_users", HOUR, "42"),
        ("cus_a", "mtr_users", later, "ann"),
    }


async def test_rollup_hours_are_utc_hours_whatever_the_session_time_zone(ctx: AppContext) -> None:
    tenant_id = tenant()
    events = [
        new_event("k1", at=HOUR + timedelta(minutes=14)),
        new_event("k2", at=HOUR + timedelta(minutes=16)),
        new_event("k3", at=HOUR - timedelta(microseconds=1)),
    ]
    async with ctx.database.transaction() as session:
        if ctx.database.dialect == "postgresql":
            # +05:45: a local hour starts at :15 past a UTC hour.
            await session.execute(sa.text("SET LOCAL TIME ZONE 'Asia/Kathmandu'"))
        seqs = await store(session, tenant_id, events, NOW)
    rollups = await stored_rollups(ctx, tenant_id)
    assert set(rollups) == {("cus_a", "mtr_sum", HOUR), ("cus_a", "mtr_sum", HOUR - timedelta(hours=1))}
    assert rollups == expected_rollups(events, seqs)


_values = st.decimals(
    min_value=Decimal(-(10**15)), max_value=Decimal(10**15), places=12, allow_nan=False, allow_infinity=False
).map(lambda d: d.normalize() if d else Decimal(0))
_events = st.lists(
    st.tuples(
        st.integers(0, 40),  # id: repeats are duplicates
        st.sampled_from(["cus_a", "cus_b"]),
        st.sampled_from(["mtr_x", "mtr_y"]),
        st.integers(0, 3 * 3600 - 1),  # seconds into a three-hour window
        _values,
    ),
    max_size=40,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=_events, cuts=st.lists(st.integers(0, 40), max_size=3))
async def test_rollups_equal_a_fold_of_the_first_event_of_each_id(
    ctx: AppContext, events: list[tuple], cuts: list[int]
) -> None:
    tenant_id = tenant()
    made = [
        new_event(f"e{n}", format(value, "f"), HOUR + timedelta(seconds=s), customer=c, meter=m)
        for n, c, m, s, value in events
    ]
    seqs: dict[str, int] = {}
    bounds = sorted({0, len(made), *(min(cut, len(made)) for cut in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        batch = {e.event_id: e for e in reversed(made[lo:hi])}  # the first of each id in the batch
        new = await store_batch(ctx, tenant_id, list(batch.values()))
        assert not new.keys() & seqs.keys()
        seqs |= new
    first = {}
    for e in made:
        first.setdefault(e.event_id, e)
    assert seqs.keys() == first.keys()
    assert await stored_rollups(ctx, tenant_id) == expected_rollups(list(first.values()), seqs)


def with_fee(event: NewEvent, fee: str | None, group_key: str = "") -> NewEvent:
    return msgspec.structs.replace(event, fee=None if fee is None else Decimal(fee), group_key=group_key)


async def stored_fees(
    ctx: AppContext, tenant_id: str
) -> dict[tuple[str, datetime, str], tuple[int, Decimal]]:
    async with ctx.database.read() as session:
        rows = await session.scalars(sa.select(UsageRollup).where(UsageRollup.tenant_id == tenant_id))
        return {(r.meter_id, r.hour, r.group_key): (r.event_count, r.fee_sum) for r in rows}


async def test_event_fees_are_stored_exactly_and_summed_per_rollup_across_batches(ctx: AppContext) -> None:
    tenant_id = tenant()
    eu, us = '["eu"]', '["us"]'
    first = [
        with_fee(new_event("a", "100"), "320.000000000001", eu),
        with_fee(new_event("b", "5"), "50", eu),
        with_fee(new_event("c", "7", HOUR + timedelta(minutes=5)), None, us),  # a price with no fee
        with_fee(new_event("d", "3", HOUR + timedelta(hours=1)), "0.029", eu),
        new_event("plain", "4", meter="mtr_other"),
    ]
    second = [
        with_fee(new_event("a", "100"), "999", eu),  # a duplicate: adds nothing
        with_fee(new_event("e", "1", HOUR + timedelta(minutes=59)), "65.786", eu),
        with_fee(new_event("f", "2", HOUR + timedelta(minutes=1)), "0.000000000001", us),
    ]
    await store_batch(ctx, tenant_id, first)
    await store_batch(ctx, tenant_id, second)
    rows = await stored_events(ctx, tenant_id)
    expected_fees = {"a": "320.000000000001", "b": "50", "c": None, "d": "0.029", "plain": None}
    expected_fees |= {"e": "65.786", "f": "0.000000000001"}
    assert {e: row.fee for e, row in rows.items()} == {
        e: None if fee is None else Decimal(fee) for e, fee in expected_fees.items()
    }
    assert await stored_fees(ctx, tenant_id) == {
        ("mtr_sum", HOUR, eu): (3, Decimal("320.000000000001") + 50 + Decimal("65.786")),
        ("mtr_sum", HOUR, us): (2, Decimal("0.000000000001")),
        ("mtr_sum", HOUR + timedelta(hours=1), eu): (1, Decimal("0.029")),
        ("mtr_other", HOUR, ""): (1, Decimal(0)),
    }
