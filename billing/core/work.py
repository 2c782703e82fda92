"""Claimed work: how every background loop takes its rows, and where how retries work is said.

The outbox, notifications, dunning, payment reconciliation, Stripe events and webhook deliveries
each say what is due, how one row is handled and what its outcome is. :func:`claim` leases a batch
in a transaction of its own, :func:`handle_each` handles it oldest first (``concurrency`` rows at
a time), :func:`drain` repeats batches until the work runs out.

How retries work:

- A handler that fails records the failure and the row's next try: now plus
  :func:`billing.core.backoff.backoff` with its loop's numbers (payment reconciliation records it
  as the claim's expiry), until its loop gives up (after some attempts, or a time window).
- A handler that raises (``on_error`` logs it), or a process that dies, leaves the row claimed:
  it is claimed again, and retried, once its lease runs out.
- An outcome is written by :func:`finish`, fenced on the claim token (notifications write theirs
  in groups, fenced alike): a handler whose lease ran out and went to another claimer gets
  :class:`ClaimLost`, and its transaction rolls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.db.claims import claim_rows, finish_claim

Handler = Callable[[sa.Row[Any], str], Awaitable[None]]  # (row, claim token)
OnError = Callable[[sa.Row[Any]], None]  # called inside the ``except`` block
log = structlog.get_logger("billing.core.work")


class Claim(NamedTuple):
    token: str
    rows: list[sa.Row[Any]]


class ClaimLost(Exception):
    """The row's claim is no longer ours: the transaction this is raised in rolls back."""

    def __init__(self, table: str, row_id: str) -> None:
        super().__init__(f"the claim on {table} {row_id} was lost")
        self.table, self.row_id = table, row_id


async def claim(
    ctx: AppContext,
    table: sa.Table,
    *,
    due: sa.ColumnElement[bool],
    order_by: Sequence[sa.Column[Any]],
    limit: int,
    lease: timedelta,
    now: datetime,
    handle_order: Sequence[sa.Column[Any]] | None = None,
) -> Claim:
    """Lease up to ``limit`` due rows, first by ``order_by``, in a transaction of their own; the rows
    come sorted by ``handle_order`` (default ``order_by``), the order to handle them in."""
    async with ctx.database.transaction() as session:
        token, rows = await claim_rows(
            session, table, due=due, order_by=order_by, limit=limit, now=now, lease=lease
        )
    # UPDATE ... RETURNING gives no order on PostgreSQL.
    columns = handle_order or order_by
    rows.sort(key=lambda row: tuple(row._mapping[column] for column in columns))
    return Claim(token, rows)


async def finish(session: AsyncSession, table: sa.Table, row_id: str, token: str, **values: Any) -> None:
    """Write the outcome of a claimed row and release it, if the claim is still ``token``; else
    raise :class:`ClaimLost`, so that ``session``'s transaction writes nothing."""
    if not await finish_claim(session, table, row_id, token, **values):
        raise ClaimLost(table.name, row_id)


async def handle_row(
    handle: Handler, row: sa.Row[Any], token: str, *, on_error: OnError | None = None
) -> None:
    """``handle`` one claimed row. A lost claim is logged; another error goes to ``on_error`` (the
    row stays claimed until its lease runs out), or propagates if there is none."""
    try:
        await handle(row, token)
    except ClaimLost as lost:
        log.warning("claim_lost", table=lost.table, row=lost.row_id)
    except Exception:
        if on_error is None:
            raise
        on_error(row)


async def handle_each(
    claimed: Claim, handle: Handler, *, concurrency: int = 1, on_error: OnError | None = None
) -> int:
    """Handle the claimed rows in their order, up to ``concurrency`` at a time; return how many."""
    pending = iter(claimed.rows)

    async def worker() -> None:
        for row in pending:
            await handle_row(handle, row, claimed.token, on_error=on_error)

    workers = min(concurrency, len(claimed.rows))
    if workers <= 1:
        await worker()
    else:
        await asyncio.gather(*(worker() for _ in range(workers)))
    return len(claimed.rows)


async def claim_and_handle(
    ctx: AppContext,
    table: sa.Table,
    *,
    due: sa.ColumnElement[bool],
    order_by: Sequence[sa.Column[Any]],
    limit: int,
    lease: timedelta,
    now: datetime,
    handle: Handler,
    handle_order: Sequence[sa.Column[Any]] | None = None,
    concurrency: int = 1,
    on_error: OnError | None = None,
) -> int:
    """Claim one batch (see :func:`claim`) and handle it (see :func:`handle_each`); return its size."""
    claimed = await claim(
        ctx, table, due=due, order_by=order_by, limit=limit, lease=lease, now=now, handle_order=handle_order
    )
    return await handle_each(claimed, handle, concurrency=concurrency, on_error=on_error)


async def drain(batch: Callable[[], Awaitable[int]], *, full: int | None = None) -> int:
    """Run ``batch`` until it handles fewer than ``full`` rows (None: until it handles none); return
    how many it handled in all."""
    total = 0
    while True:
        count = await batch()
        total += count
        if count == 0 or (full is not None and count < full):
            return total
