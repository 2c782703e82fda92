"""Usage tallies for the drafts one billing run closes, shared by its batches.

At a month's end most of a tenant's subscriptions close the same period. Read a batch of
customers at a time, the period's rollups would be scanned once per batch, with a membership
test per row. When at least half of a tenant's subscriptions are due, the run instead reads the
tenant's whole period once, with no customer filter, and keeps it for its later batches; but
not for a tenant so large that its tallies would weigh on the process's memory (above
``TENANT_WIDE_LIMIT`` open subscriptions, a few hundred bytes per customer and meter).

A kept tally can miss usage accepted after it was read. Such an event is for a period that has
ended, so ingestion flags its subscription and the draft is recomputed (finalization counts the
events themselves in any case): the same guarantee as for an event that commits while a batch
is being closed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.models import Subscription
from billing.metering import usage
from billing.metering.models import Meter
from billing.metering.usage import Range, SeriesKey, Tally

TENANT_WIDE_LIMIT = 50_000


class RunTallies:
    def __init__(self, at: datetime, *, tenant_wide: bool = True) -> None:
        """``tenant_wide=False`` for a close of a few subscriptions (a plan change or cancel):
        it reads only their customers, however many of the tenant's subscriptions are due."""
        self.at = at
        self._may_read_tenant = tenant_wide
        self._tenant_wide: dict[str, bool] = {}
        self._kept: dict[tuple[str, Range, tuple[str, ...]], dict[SeriesKey, Tally]] = {}

    async def period(
        self,
        session: AsyncSession,
        tenant_id: str,
        customer_ids: Sequence[str],
        meters: Sequence[Meter],
        period: Range,
    ) -> dict[SeriesKey, Tally]:
        """The tallies of these customers over the period, as ``usage.period_tallies`` gives them."""
        if not await self._whole_tenant(session, tenant_id):
            return await usage.period_tallies(session, tenant_id, customer_ids, meters, period)
        key = (tenant_id, period, tuple(sorted(m.id for m in meters)))
        if key not in self._kept:
            self._kept[key] = await usage.whole_hour_tallies(session, tenant_id, None, meters, period)
        kept = self._kept[key]
        # Raw events of the hours the period's edges cut are folded into the tallies handed out:
        # only then must they be copies of the kept ones.
        cut = usage.cuts_hours(period)
        mine: dict[SeriesKey, Tally] = defaultdict(Tally)
        for customer_id in customer_ids:
            for meter in meters:
                if (series := (customer_id, meter.id)) in kept:
                    mine[series] = kept[series].copy() if cut else kept[series]
        if cut:
            await usage.add_cut_hours(session, tenant_id, customer_ids, meters, period, mine)
        return mine

    async def _whole_tenant(self, session: AsyncSession, tenant_id: str) -> bool:
        """Whether at least half of the tenant's open subscriptions, and at most the limit, are due
        in this run (decided at its first batch, before any of them has moved on)."""
        if not self._may_read_tenant:
            return False
        if tenant_id not in self._tenant_wide:
            table = Subscription.__table__
            due, live = (
                await session.execute(
                    sa.select(
                        sa.func.count().filter(table.c.next_period_end <= self.at),
                        sa.func.count(),
                    ).where(table.c.tenant_id == tenant_id, table.c.next_period_end.is_not(None))
                )
            ).one()
            self._tenant_wide[tenant_id] = due * 2 >= live and live <= TENANT_WIDE_LIMIT
        return self._tenant_wide[tenant_id]
