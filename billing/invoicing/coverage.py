"""Subscriptions as the coverage that ingestion asks for (``billing.metering.coverage``).

An event is accepted only inside a subscription (else ``no_subscription``), so that it belongs to
exactly one period. An event for a period that has already ended flags its subscription, so that
the billing run recomputes the drafts (or bills it as late usage). The flag is decided from the
subscription as read before the write, so an event that commits while its period is being closed
may leave the draft a little behind; finalization counts the events themselves, never the draft.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime
from functools import partial

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.queries import any_of
from billing.invoicing import periods
from billing.invoicing.models import Subscription
from billing.metering.coverage import Coverage


class SubscriptionCoverage:
    """:class:`billing.metering.coverage.CoverageSource` over this domain's subscriptions."""

    async def coverages(
        self, session: AsyncSession, tenant_id: str, customer_ids: Collection[str]
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
                table.c.timezone,
                table.c.trial_end,
            ).where(
                table.c.tenant_id == tenant_id,
                any_of(table.c.customer_id, list(customer_ids), session.get_bind().dialect.name),
            )
        )
        found: dict[str, list[Coverage]] = defaultdict(list)
        for row in rows:
            start = partial(_period_start, row.starts_at, row.cancel_at, row.timezone, row.trial_end)
            found[row.customer_id].append(Coverage(*row[1:6], period_start_of=start))
        return found

    async def flag_late_usage(
        self, session: AsyncSession, subscription_ids: Collection[str], now: datetime
    ) -> None:
        if subscription_ids:
            await session.execute(
                sa.update(Subscription.__table__)
                .where(Subscription.__table__.c.id.in_(sorted(subscription_ids)))
                .values(usage_changed_at=now)
            )


def _period_start(
    starts_at: datetime, cancel_at: datetime | None, timezone: str, trial_end: datetime | None, at: datetime
) -> datetime:
    """The start of the period holding ``at``, as ``schedule.period_at`` computes it."""
    period = periods.period_containing(starts_at, cancel_at, timezone, at, split=trial_end)
    return starts_at if period is None else period.start


SUBSCRIPTION_COVERAGE = SubscriptionCoverage()
