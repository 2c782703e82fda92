"""billing.core.work on real databases: claimed rows are handled once each, oldest first; a failure
is retried after its backoff or once its lease lapses; a handler whose claim was lost writes nothing.

The rows are outbox rows of a consumer no job dispatches, so only these tests touch them.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from billing.core import work
from billing.core.backoff import backoff
from billing.core.context import AppContext
from billing.core.ids import new_id
from billing.models import metadata
from tests.conftest import TenantHandle

OUTBOX = metadata.tables["outbox"]
CONSUMER = "test_work"
LEASE = timedelta(minutes=2)
FIRST = timedelta(seconds=10)


def outbox_row(tenant_id: str, at: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id("obx"),
        "event_id": new_id("evt"),
        "tenant_id": tenant_id,
        "consumer": CONSUMER,
        "topic": "test.work",
        "payload": {"n": 1},
        "created_at": at,
        "available_at": at,
        "attempts": 0,
    }
    return row | overrides


async def insert(ctx: AppContext, rows: list[dict[str, Any]]) -> list[str]:
    async with ctx.database.transaction() as session:
        await session.execute(OUTBOX.insert(), rows)
    return [row["id"] for row in rows]


async def stored(ctx: AppContext) -> dict[str, sa.Row[Any]]:
    async with ctx.database.read() as session:
        return {row.id: row for row in (await session.execute(sa.select(OUTBOX))).all()}


def due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        OUTBOX.c.consumer == CONSUMER,
        OUTBOX.c.processed_at.is_(None),
        OUTBOX.c.failed_at.is_(None),
        OUTBOX.c.available_at <= now,
    )


async def claim(ctx: AppContext, *, limit: int = 10) -> work.Claim:
    now = ctx.clock.now()
    return await work.claim(
        ctx,
        OUTBOX,
        due=due(now),
        order_by=[OUTBOX.c.available_at, OUTBOX.c.id],
        limit=limit,
        lease=LEASE,
        now=now,
    )


async def run(
    ctx: AppContext,
    handle: work.Handler,
    *,
    limit: int = 10,
    concurrency: int = 1,
    on_error: work.OnError | None = None,
) -> int:
    now = ctx.clock.now()
    return await work.claim_and_handle(
        ctx,
        OUTBOX,
        due=due(now),
        order_by=[OUTBOX.c.available_at, OUTBOX.c.id],
        limit=limit,
        lease=LEASE,
        now=now,
        handle=handle,
        concurrency=concurrency,
        on_error=on_error,
    )


async def processed(ctx: AppContext, row: sa.Row[Any], token: str) -> None:
    async with ctx.database.transaction() as session:
        await work.finish(
            session, OUTBOX, row.id, token, processed_at=ctx.clock.now(), attempts=row.attempts + 1
        )


async def test_due_rows_are_handled_oldest_first_once_each_and_released(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    now = ctx.clock.now()
    minutes = [3, 5, 1, 4, 2]
    ids = await insert(ctx, [outbox_row(tenant.id, now - timedelta(minutes=m)) for m in minutes])
    (later,) = await insert(ctx, [outbox_row(tenant.id, now + timedelta(days=1))])
    oldest_first = [i for _, i in sorted(zip(minutes, ids, strict=True), reverse=True)]
    handled: list[str] = []

    async def handle(row: sa.Row[Any], token: str) -> None:
        handled.append(row.id)
        await processed(ctx, row, token)

    assert await run(ctx, handle, limit=3) == 3
    assert await run(ctx, handle, limit=3) == 2
    assert await run(ctx, handle, limit=3) == 0
    assert handled == oldest_first
    rows = await stored(ctx)
    assert all(rows[i].processed_at == now and rows[i].attempts == 1 for i in ids)
    assert all(rows[i].claimed_by is None and rows[i].claim_expires_at is None for i in ids)
    assert rows[later].processed_at is None and rows[later].claimed_by is None


async def test_claimed_rows_come_in_the_handling_order_asked_for(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    now = ctx.clock.now()
    # Due in one order, created in the opposite one.
    ids = await insert(
        ctx,
        [
            outbox_row(tenant.id, now - timedelta(minutes=n), available_at=now - timedelta(minutes=10 - n))
            for n in range(4)
        ],
    )
    claimed = await work.claim(
        ctx,
        OUTBOX,
        due=due(now),
        order_by=[OUTBOX.c.available_at, OUTBOX.c.id],
        limit=10,
        lease=LEASE,
        now=now,
        handle_order=[OUTBOX.c.created_at, OUTBOX.c.id],
    )
    assert [row.id for row in claimed.rows] == ids[::-1]
    assert all(row.claimed_by == claimed.token for row in claimed.rows)


async def test_two_claimers_never_handle_a_row_twice(ctx: AppContext, tenant: TenantHandle) -> None:
    now = ctx.clock.now()
    ids = await insert(ctx, [outbox_row(tenant.id, now) for _ in range(30)])
    handled: list[str] = []

    async def handle(row: sa.Row[Any], token: str) -> None:
        handled.append(row.id)
        await asyncio.sleep(0)  # let the other claimer run in between
        await processed(ctx, row, token)

    counts = await asyncio.gather(*(work.drain(partial(run, ctx, handle, limit=4)) for _ in range(2)))
    assert sum(counts) == 30
    assert sorted(handled) == sorted(ids)
    assert {row.attempts for row in (await stored(ctx)).values()} == {1}


async def test_a_failure_recorded_by_its_handler_is_retried_after_the_backoff(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    (row_id,) = await insert(ctx, [outbox_row(tenant.id, ctx.clock.now())])
    attempts: list[datetime] = []

    async def fails_twice(row: sa.Row[Any], token: str) -> None:
        attempts.append(ctx.clock.now())
        if len(attempts) > 2:
            await processed(ctx, row, token)
            return
        attempt = row.attempts + 1
        retry_at = ctx.clock.now() + backoff(attempt, first=FIRST, cap=timedelta(hours=1))
        async with ctx.database.transaction() as session:
            await work.finish(session, OUTBOX, row.id, token, attempts=attempt, available_at=retry_at)

    assert await run(ctx, fails_twice) == 1
    for delay in (FIRST, 2 * FIRST):
        row = (await stored(ctx))[row_id]
        assert row.available_at == ctx.clock.now() + delay and row.claimed_by is None
        ctx.clock.advance(delay - timedelta(seconds=1))
        assert await run(ctx, fails_twice) == 0, "retried before its backoff"
        ctx.clock.advance(timedelta(seconds=1))
        assert await run(ctx, fails_twice) == 1
    row = (await stored(ctx))[row_id]
    assert (row.attempts, row.processed_at) == (3, ctx.clock.now())
    assert [b - a for a, b in itertools.pairwise(attempts)] == [FIRST, 2 * FIRST]


async def test_a_handler_that_raises_leaves_its_row_claimed_until_the_lease_lapses(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    now = ctx.clock.now()
    broken, fine = await insert(
        ctx, [outbox_row(tenant.id, now - timedelta(seconds=1)), outbox_row(tenant.id, now)]
    )
    failed: list[tuple[str, BaseException | None]] = []

    async def handle(row: sa.Row[Any], token: str) -> None:
        if row.id == broken:
            raise RuntimeError("boom")
        await processed(ctx, row, token)

    def on_error(row: sa.Row[Any]) -> None:
        failed.append((row.id, sys.exc_info()[1]))

    assert await run(ctx, handle, on_error=on_error) == 2
    assert [(row_id, type(exc)) for row_id, exc in failed] == [(broken, RuntimeError)]
    rows = await stored(ctx)
    assert rows[fine].processed_at == now, "the batch goes on after a failure"
    assert rows[broken].processed_at is None and rows[broken].claim_expires_at == now + LEASE

    ctx.clock.advance(LEASE - timedelta(seconds=1))
    assert await run(ctx, partial(processed, ctx)) == 0, "taken again while its lease held"
    ctx.clock.advance(timedelta(seconds=1))
    assert await run(ctx, partial(processed, ctx)) == 1
    assert (await stored(ctx))[broken].processed_at == ctx.clock.now()


async def test_without_on_error_a_handler_error_propagates(ctx: AppContext, tenant: TenantHandle) -> None:
    await insert(ctx, [outbox_row(tenant.id, ctx.clock.now())])

    async def handle(row: sa.Row[Any], token: str) -> None:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        await run(ctx, handle)


async def test_a_handler_whose_claim_was_lost_writes_nothing(ctx: AppContext, tenant: TenantHandle) -> None:
    (row_id,) = await insert(ctx, [outbox_row(tenant.id, ctx.clock.now())])
    stale = await claim(ctx)
    ctx.clock.advance(LEASE + timedelta(seconds=1))
    live = await claim(ctx)
    assert [r.id for r in stale.rows] == [r.id for r in live.rows] == [row_id]

    async def overwrite(row: sa.Row[Any], token: str) -> None:
        async with ctx.database.transaction() as session:
            await session.execute(sa.update(OUTBOX).where(OUTBOX.c.id == row.id).values(payload={"n": 2}))
            await work.finish(session, OUTBOX, row.id, token, processed_at=ctx.clock.now(), attempts=99)

    assert await work.handle_each(stale, overwrite) == 1  # the lost claim is logged, not raised
    row = (await stored(ctx))[row_id]
    assert (row.payload, row.attempts, row.processed_at) == ({"n": 1}, 0, None)
    assert row.claimed_by == live.token

    async with ctx.database.transaction() as session:
        with pytest.raises(work.ClaimLost):
            await work.finish(session, OUTBOX, row_id, stale.token, attempts=99)

    assert await work.handle_each(live, overwrite) == 1
    row = (await stored(ctx))[row_id]
    assert (row.payload, row.attempts, row.claimed_by) == ({"n": 2}, 99, None)


async def test_concurrency_bounds_the_handlers_in_flight_and_starts_them_in_order(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    now = ctx.clock.now()
    ids = await insert(ctx, [outbox_row(tenant.id, now - timedelta(seconds=n)) for n in range(7, 0, -1)])
    started: list[str] = []
    in_flight = most = 0

    async def handle(row: sa.Row[Any], token: str) -> None:
        nonlocal in_flight, most
        started.append(row.id)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        await processed(ctx, row, token)

    assert await run(ctx, handle, concurrency=3) == 7
    assert started == ids
    assert most == 3
    assert all(row.processed_at == now for row in (await stored(ctx)).values())


def counts(*values: int) -> Callable[[], Awaitable[int]]:
    pending: Iterator[int] = iter(values)

    async def batch() -> int:
        return next(pending)

    return batch


async def test_drain_repeats_while_batches_come_back_full() -> None:
    assert await work.drain(counts(5, 5, 3, 5), full=5) == 13
    assert await work.drain(counts(5, 5, 0, 5), full=5) == 10


async def test_drain_without_a_batch_size_repeats_until_a_batch_is_empty() -> None:
    assert await work.drain(counts(2, 7, 1, 0, 4)) == 10
