"""Which subscription covers a usage event, as ingestion sees it.

An event is accepted only inside a subscription (else ``no_subscription``), so that it belongs to
exactly one period. An event for a period that has already ended flags its subscription, so that
the billing run recomputes the drafts (or bills it as late usage). The flag is decided from the
subscription as read before the write, so an event that commits while its period is being closed
may leave the draft a little behind; finalization counts the events themselves, never the draft.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.queries import any_of
from billing.invoicing.models import Subscription


@dataclass(frozen=True)
class Coverage:
    subscription_id: str
    starts_at: datetime
    cancel_at: datetime | None
    billed_through: datetime | None
    next_period_end: datetime | None

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.cancel_at is None or at < self.cancel_at)

    def is_late(self, at: datetime, now: datetime) -> bool:
        """Whether ``at`` falls in a period that has ended (closed into an invoice or about to be)."""
        if self.billed_through is not None and at < self.billed_through:
            return True
        return self.next_period_end is not None and self.next_period_end <= now and at < self.next_period_end


async def coverages(
    session: AsyncSession, tenant_id: str, customer_ids: Collection[str]
) -> dict[str, list[Coverage]]:
    """Every subscription of these customers, by customer id; one query."""
    if not customer_ids:
        return {}
    table = Subscription.__table__
    rows = await session.execute(
        sa.select(
            table.c.customer_id,
            table.c.id,
            table.c.starts_at,
            table.c.cancel_at,
            table.c.billed_through,
            table.c.next_period_end,
        ).where(
            table.c.tenant_id == tenant_id,
            any_of(table.c.customer_id, list(customer_ids), session.get_bind().dialect.name),
        )
    )
    found: dict[str, list[Coverage]] = defaultdict(list)
    for row in rows:
        found[row.customer_id].append(Coverage(*row[1:]))
    return found


def covering(candidates: list[Coverage], at: datetime) -> Coverage | None:
    for candidate in candidates:  # ``covers`` inlined: this runs for every event ingested
        if candidate.starts_at <= at and (candidate.cancel_at is None or at < candidate.cancel_at):
            return candidate
    return None


async def flag_late_usage(session: AsyncSession, subscription_ids: Collection[str], now: datetime) -> None:
    if subscription_ids:
        await session.execute(
            sa.update(Subscription.__table__)
            .where(Subscription.__table__.c.id.in_(sorted(subscription_ids)))
            .values(usage_changed_at=now)
        )
