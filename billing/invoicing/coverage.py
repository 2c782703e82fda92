"""Subscriptions as the coverage that ingestion asks for (``billing.metering.coverage``).

An event is accepted only inside a subscription (else ``no_subscription``), so that it belongs to
exactly one period. An event for a period that has already ended flags its subscription, so that
the billing run recomputes the drafts (or bills it as late usage). The flag is decided from the
subscription as read before the write, so an event that commits while its period is being closed
may leave the draft a little behind; finalization counts the events themselves, never the draft.
Each event's fee under a percentage price comes from the rules of its subscription's plan
(``fee_rules``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.queries import any_of
from billing.invoicing import fee_rules, periods
from billing.invoicing.models import Subscription
from billing.metering.coverage import Coverage, FeeRule


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
                table.c.plan_id,
            ).where(
                table.c.tenant_id == tenant_id,
                any_of(table.c.customer_id, list(customer_ids), session.get_bind().dialect.name),
            )
        )
        found: dict[str, list[Coverage]] = defaultdict(list)
        for row in rows:
            start = _period_starts(row.starts_at, row.cancel_at, row.timezone, row.trial_end)
            found[row.customer_id].append(Coverage(*row[1:6], period_start_of=start, plan_id=row.plan_id))
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

    async def fee_rules(
        self, session: AsyncSession, plan_ids: Collection[str]
    ) -> dict[str, dict[str, FeeRule]]:
        return await fee_rules.fee_rules(session, plan_ids)


class _PeriodStarts:
    """The start of a subscription's period holding an instant, as ``schedule.period_at``
    computes it; the last period found is kept, as events mostly fall in the current one."""

    __slots__ = ("cancel_at", "last", "starts_at", "timezone", "trial_end")

    def __init__(
        self, starts_at: datetime, cancel_at: datetime | None, timezone: str, trial_end: datetime | None
    ) -> None:
        self.starts_at, self.cancel_at, self.timezone, self.trial_end = (
            starts_at,
            cancel_at,
            timezone,
            trial_end,
        )
        self.last: periods.Period | None = None

    def __call__(self, at: datetime) -> datetime:
        last = self.last
        if last is not None and last.start <= at < last.end:
            return last.start
        period = periods.period_containing(
            self.starts_at, self.cancel_at, self.timezone, at, split=self.trial_end
        )
        if period is None:
            return self.starts_at
        self.last = period
        return period.start


# Kept across batches (a batch reads its subscriptions afresh, and mostly has one event per
# subscription): the subscription's fields are the key, so a change of them starts anew.
_PERIOD_STARTS_LIMIT = 100_000
_PERIOD_STARTS: dict[tuple[datetime, datetime | None, str, datetime | None], _PeriodStarts] = {}


def _period_starts(
    starts_at: datetime, cancel_at: datetime | None, timezone: str, trial_end: datetime | None
) -> _PeriodStarts:
    key = (starts_at, cancel_at, timezone, trial_end)
    found = _PERIOD_STARTS.get(key)
    if found is None:
        if len(_PERIOD_STARTS) >= _PERIOD_STARTS_LIMIT:
            _PERIOD_STARTS.clear()
        found = _PERIOD_STARTS[key] = _PeriodStarts(*key)
    return found


SUBSCRIPTION_COVERAGE = SubscriptionCoverage()
