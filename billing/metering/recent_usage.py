"""Which customers have had usage accepted since a consumer last looked, for work that must follow
ingestion within seconds (usage alerts, threshold invoices) without a write on ingestion's path.

A consumer reads a window of events by ``seq`` and, once it has handled the window, advances its
cursor. The window starts at the cursor as it was one pass *before* the last: a sequence number is
taken when a row is inserted but becomes visible at its commit, so on PostgreSQL a batch can
commit just after a pass has read past its numbers; reading each number in two passes catches it,
as long as no ingestion transaction stays open longer than a pass interval (they take well under
a second). Customers are therefore seen more than once: consumers make their effects idempotent
(a unique key per alert crossing, per threshold multiple), and the cursor only saves work.
Two replicas handling one window at once is harmless for the same reason; the conditional update
lets only one of them advance it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.inserts import insert_ignore
from billing.core.db.queries import rowcount
from billing.metering.usage_models import UsageCursor, UsageEvent

ALL_TENANTS = "*"


@dataclass(frozen=True)
class UsageWindow:
    name: str
    scope: str
    read_from: int  # events with seq above this are in the window
    high_seq: int  # the cursor before this pass
    seen_seq: int  # the greatest seq in the window (high_seq when it is empty)
    customers: list[tuple[str, str]]  # (tenant id, customer id), sorted


async def new_usage(session: AsyncSession, name: str, tenant_id: str | None, now: datetime) -> UsageWindow:
    """The customers with events in the consumer's window, for one tenant or (None) all of them."""
    scope = tenant_id or ALL_TENANTS
    cursor = UsageCursor.__table__
    await insert_ignore(
        session,
        cursor,
        [{"name": name, "scope": scope, "high_seq": 0, "previous_high_seq": 0, "updated_at": now}],
    )
    row = (
        await session.execute(
            sa.select(cursor.c.high_seq, cursor.c.previous_high_seq).where(
                cursor.c.name == name, cursor.c.scope == scope
            )
        )
    ).one()
    events = UsageEvent.__table__
    where = [events.c.seq > row.previous_high_seq]
    if tenant_id is not None:
        where.append(events.c.tenant_id == tenant_id)
    found = (
        await session.execute(
            sa.select(events.c.tenant_id, events.c.customer_id, sa.func.max(events.c.seq))
            .where(*where)
            .group_by(events.c.tenant_id, events.c.customer_id)
        )
    ).all()
    seen = max([row.high_seq, *(r[2] for r in found)])
    customers = sorted((r.tenant_id, r.customer_id) for r in found)
    return UsageWindow(name, scope, row.previous_high_seq, row.high_seq, seen, customers)


async def advance(session: AsyncSession, window: UsageWindow, now: datetime) -> bool:
    """Move the cursor past a handled window; False when another pass moved it first."""
    cursor = UsageCursor.__table__
    result = await session.execute(
        sa.update(cursor)
        .where(
            cursor.c.name == window.name, cursor.c.scope == window.scope, cursor.c.high_seq == window.high_seq
        )
        .values(previous_high_seq=window.high_seq, high_seq=window.seen_seq, updated_at=now)
    )
    return rowcount(result) == 1
