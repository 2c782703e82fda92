"""The new-usage window of a consumer: every accepted event is seen, in two passes, and only the
pass that handled a window moves the cursor."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from billing.core.context import AppContext
from billing.metering.event_store import NewEvent, store
from billing.metering.recent_usage import advance, new_usage

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def tenant() -> str:
    return f"ten_{uuid.uuid4().hex[:20]}"


async def post(ctx: AppContext, tenant_id: str, customer: str, count: int = 1) -> None:
    events = [
        NewEvent(f"evt-{uuid.uuid4().hex}", customer, "mtr_sum", NOW, Decimal(1), None, "h", None)
        for _ in range(count)
    ]
    async with ctx.database.transaction() as session:
        await store(session, tenant_id, events, NOW)


async def window(ctx: AppContext, name: str, tenant_id: str, *, handled: bool = True) -> list[str]:
    async with ctx.database.transaction() as session:
        found = await new_usage(session, name, tenant_id, NOW)
        if handled:
            await advance(session, found, NOW)
    return [customer for _, customer in found.customers]


async def test_each_event_is_seen_in_two_passes_then_no_more(ctx: AppContext) -> None:
    t = tenant()
    await post(ctx, t, "cus_a", 3)
    assert await window(ctx, "alerts", t) == ["cus_a"]
    await post(ctx, t, "cus_b")
    assert await window(ctx, "alerts", t) == ["cus_a", "cus_b"]  # a's events a second time
    assert await window(ctx, "alerts", t) == ["cus_b"]
    assert await window(ctx, "alerts", t) == []


async def test_an_unhandled_window_is_read_again_and_consumers_are_independent(ctx: AppContext) -> None:
    t, other = tenant(), tenant()
    await post(ctx, t, "cus_a")
    await post(ctx, other, "cus_z")
    assert await window(ctx, "thresholds", t, handled=False) == ["cus_a"]
    assert await window(ctx, "thresholds", t) == ["cus_a"]
    assert await window(ctx, "alerts", t) == ["cus_a"]  # another consumer starts from the beginning


async def test_two_passes_over_one_window_advance_the_cursor_once(ctx: AppContext) -> None:
    t = tenant()
    await post(ctx, t, "cus_a")
    async with ctx.database.transaction() as session:
        first = await new_usage(session, "alerts", t, NOW)
    async with ctx.database.transaction() as session:
        second = await new_usage(session, "alerts", t, NOW)
    async with ctx.database.transaction() as session:
        assert await advance(session, first, NOW)
    async with ctx.database.transaction() as session:
        assert not await advance(session, second, NOW)
