"""The percentage fees of a period, per customer, meter and group, as ``usage_lines`` rates them.

Each event's fee was computed at ingestion with the price its group wins (``fee_rules``) and is
summed in the hourly rollups, so drafts read totals from the rollups and only the first
``free_units`` events of each group from the events themselves (``usage.grouped_period_fees``).
Finalization reads the events it has marked, exactly as it counts their quantities.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import percentage
from billing.invoicing.grouped_usage import grouped_meters
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import prices_of
from billing.invoicing.usage_lines import GroupedFees, GroupKey
from billing.metering import groups, usage
from billing.metering.models import Meter
from billing.metering.usage_models import UsageEvent

_events = UsageEvent.__table__
_ZERO = Decimal(0)


def percentage_meters(plans: Iterable[Plan]) -> dict[str, int]:
    """The meters with a percentage price in these plans, with the most free units of those."""
    free: dict[str, int] = {}
    for plan in plans:
        for stored, rate in prices_of(plan):
            if isinstance(rate, percentage.PercentagePrice):
                meter_id = stored["meter_id"]
                free[meter_id] = max(free.get(meter_id, 0), rate.free_units or 0)
    return free


async def period_fees(
    session: AsyncSession,
    tenant_id: str,
    plans: Mapping[str, Plan],
    meters: Mapping[str, Meter],
    period: usage.Range,
) -> dict[str, GroupedFees]:
    """customer id -> meter id -> group key -> the fees of the period, for the customers of
    ``plans`` (customer id -> the plan of its subscription over the period) on the meters their
    plans price by percentage (none read for the others). The keys are those of the tallies
    ``grouped_usage`` gives the lines: per group on a meter whose prices need groups, else
    ``''``."""
    free = percentage_meters(plans.values())
    if not free or not plans:
        return {}
    reads = await usage.grouped_period_fees(
        session, tenant_id, sorted(plans), [meters[meter_id] for meter_id in sorted(free)], period, free
    )
    found: dict[str, dict[str, dict[GroupKey, percentage.FeeTally]]] = defaultdict(lambda: defaultdict(dict))
    for (customer_id, meter_id, group_key), read in reads.items():
        found[customer_id][meter_id][group_key] = percentage.FeeTally(read.total, read.events, read.earliest)
    return {
        customer_id: _as_lines_read(plans[customer_id], by_meter) for customer_id, by_meter in found.items()
    }


def _as_lines_read(plan: Plan, by_meter: Mapping[str, Mapping[GroupKey, percentage.FeeTally]]) -> GroupedFees:
    """The groups of each meter whose prices do not tell groups apart, merged under ``''``."""
    needed = grouped_meters(plan)
    merged: dict[str, Mapping[GroupKey, percentage.FeeTally]] = {}
    for meter_id, by_group in by_meter.items():
        if meter_id in needed:
            merged[meter_id] = dict(by_group)
        else:
            merged[meter_id] = {"": functools.reduce(percentage.FeeTally.merge, by_group.values())}
    return merged


async def marked_fees(
    session: AsyncSession,
    subscription: Subscription,
    plan: Plan,
    meters: Mapping[str, Meter],
    start: datetime,
    end: datetime | None,
    *,
    invoice_id: str | None,
) -> GroupedFees:
    """meter id -> group key -> the fees of the events in [start, end) marked with the invoice
    (None: with any invoice)."""
    free = percentage_meters([plan])
    if not free:
        return {}
    query = (
        sa.select(_events.c.meter_id, _events.c.timestamp, _events.c.seq, _events.c.fee, _events.c.properties)
        .where(
            _events.c.tenant_id == subscription.tenant_id,
            _events.c.customer_id == subscription.customer_id,
            _events.c.meter_id.in_(sorted(free)),
            _events.c.timestamp >= start,
            _events.c.invoice_id == invoice_id if invoice_id else _events.c.invoice_id.is_not(None),
        )
        .order_by(_events.c.timestamp, _events.c.seq)
    )
    if end is not None:
        query = query.where(_events.c.timestamp < end)
    ordered: dict[str, dict[GroupKey, list[tuple[tuple[datetime, int], Decimal]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in await session.execute(query):
        group_key = groups.group_key(row.properties, meters[row.meter_id].group_by)
        fee = _ZERO if row.fee is None else row.fee
        ordered[row.meter_id][group_key].append(((row.timestamp, row.seq), fee))
    return _as_lines_read(
        plan,
        {
            meter_id: {key: percentage.FeeTally.of(listed) for key, listed in by_group.items()}
            for meter_id, by_group in ordered.items()
        },
    )
