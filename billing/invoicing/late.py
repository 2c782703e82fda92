"""Usage by period for invoices: estimates for drafts, exact counts for finalization.

Drafts read the hourly rollups (fast, all events). Finalizing marks the events it bills with
the invoice id in one UPDATE and then counts exactly the marked rows, so that what an invoice
bills and which events say they are on it can never disagree, whatever commits meanwhile.
An event left unmarked in a period whose invoice is already finalized is late usage: the next
invoice of the subscription bills it, priced at what it adds to its own period. What the
finalized invoices billed for that period (quantities, and the amounts its commitments need)
is read from their lines, the successor's invoices included for a replaced subscription.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.invoicing import commitments, periods, schedule, usage_lines
from billing.invoicing.fee_tallies import marked_fees, period_fees
from billing.invoicing.grouped_usage import customer_usage, grouped_meters
from billing.invoicing.invoices import FINALIZED
from billing.invoicing.lines import Billed, LatePeriod
from billing.invoicing.models import Invoice, InvoiceLine, Plan, Subscription
from billing.invoicing.plans import prices_of
from billing.invoicing.usage_lines import GroupKey, LineKey
from billing.metering import groups, usage
from billing.metering.models import Meter
from billing.metering.usage import Tally
from billing.metering.usage_models import UsageEvent

_events = UsageEvent.__table__


async def mark_events(
    session: AsyncSession,
    subscription: Subscription,
    invoice_id: str,
    until: datetime | None,
    *,
    since: datetime | None = None,
) -> None:
    """Put every unbilled event of the subscription in [since, until) on the invoice; ``since``
    defaults to the subscription's start, ``until`` None means no end."""
    conditions = [
        _events.c.tenant_id == subscription.tenant_id,
        _events.c.customer_id == subscription.customer_id,
        _events.c.invoice_id.is_(None),
        _events.c.timestamp >= (since or subscription.starts_at),
    ]
    if until is not None:
        conditions.append(_events.c.timestamp < until)
    await session.execute(
        sa.update(_events).where(*conditions).values(invoice_id=invoice_id),
        execution_options={"synchronize_session": False},
    )


async def marked_usage(
    session: AsyncSession,
    subscription: Subscription,
    meters: Mapping[str, Meter],
    start: datetime,
    end: datetime | None,
    grouped: set[str],
    *,
    invoice_id: str | None = None,
) -> dict[str, dict[GroupKey, Tally]]:
    """Tallies of the billed events in [start, end), those on ``invoice_id`` or on any invoice:
    per meter and group key on the ``grouped`` meters (``''`` on the others), as the plan's lines
    take them (``grouped_usage``)."""
    query = sa.select(
        _events.c.meter_id, _events.c.value, _events.c.timestamp, _events.c.seq, _events.c.properties
    ).where(
        _events.c.tenant_id == subscription.tenant_id,
        _events.c.customer_id == subscription.customer_id,
        _events.c.meter_id.in_(list(meters)),
        _events.c.timestamp >= start,
        _events.c.invoice_id == invoice_id if invoice_id else _events.c.invoice_id.is_not(None),
    )
    if end is not None:
        query = query.where(_events.c.timestamp < end)
    result: dict[str, dict[GroupKey, Tally]] = defaultdict(lambda: defaultdict(Tally))
    for row in await session.execute(query):
        meter = meters[row.meter_id]
        key = groups.group_key(row.properties, meter.group_by) if meter.id in grouped else ""
        usage.fold_event(result[meter.id][key], meter, row)
    return result


async def late_periods(
    session: AsyncSession,
    subscription: Subscription,
    plan: Plan,
    meters: Mapping[str, Meter],
    *,
    before: datetime,
    invoice_id: str | None = None,
) -> list[LatePeriod]:
    """Earlier, already invoiced periods with late events, before ``before``.

    With ``invoice_id`` (finalizing): the events that invoice has just marked, counted exactly.
    Without (a draft): the unbilled events, estimated from the rollups.
    """
    timestamps = await session.scalars(
        sa.select(_events.c.timestamp).where(
            _events.c.tenant_id == subscription.tenant_id,
            _events.c.customer_id == subscription.customer_id,
            _events.c.invoice_id == invoice_id if invoice_id else _events.c.invoice_id.is_(None),
            _events.c.timestamp >= subscription.starts_at,
            _events.c.timestamp < before,
        )
    )
    touched = {_period_of(subscription, at) for at in timestamps}
    invoiced = await finalized_periods(session, subscription.id)
    result = []
    for period in sorted(touched & invoiced):
        grouped: usage_lines.GroupedTallies
        fees: usage_lines.GroupedFees
        span = (period.start, period.end)
        if invoice_id:  # every billed event of the period, the ones just marked included
            grouped = await marked_usage(session, subscription, meters, *span, grouped_meters(plan))
            fees = await marked_fees(session, subscription, plan, meters, *span, invoice_id=None)
        else:
            customer_id = subscription.customer_id
            grouped = await customer_usage(session, subscription.tenant_id, customer_id, plan, meters, span)
            by_customer = await period_fees(
                session, subscription.tenant_id, {customer_id: plan}, meters, span
            )
            fees = by_customer.get(customer_id, {})
        now = usage_lines.line_usage(plan, meters, grouped, fees)
        billed = await billed_lines(session, subscription, plan, period, exclude=invoice_id)
        amounts = await billed_amounts(session, subscription, plan, period, exclude=invoice_id)
        result.append(LatePeriod(period, now, billed, amounts.by_price, amounts.counted, amounts.commitment))
    return result


def _period_of(subscription: Subscription, at: datetime) -> periods.Period:
    """The period of an event; one that raced the cancellation past its end counts in the last one."""
    cancel_at = subscription.cancel_at
    if cancel_at is not None and at >= cancel_at:
        at = cancel_at - timedelta(microseconds=1)
    period = schedule.period_at(subscription, at)
    assert period is not None  # events are only accepted inside the subscription
    return period


async def finalized_periods(session: AsyncSession, subscription_id: str) -> set[periods.Period]:
    rows = await session.execute(
        sa.select(Invoice.period_start, Invoice.period_end).where(
            Invoice.subscription_id == subscription_id,
            Invoice.status.in_(FINALIZED),
            Invoice.period_start < Invoice.period_end,
            Invoice.threshold_multiple.is_(None),
        )
    )
    return {periods.Period(row.period_start, row.period_end) for row in rows}


async def billed_lines(
    session: AsyncSession,
    subscription: Subscription,
    plan: Plan,
    period: periods.Period,
    *,
    exclude: str | None,
) -> dict[LineKey, Billed]:
    """What finalized invoices have billed per line of one period (usage, trial and late lines)."""
    query = _billed_lines(
        subscription,
        exclude,
        InvoiceLine.meter_id,
        InvoiceLine.price_index,
        InvoiceLine.group_values,
        InvoiceLine.quantity,
        InvoiceLine.amount,
    ).where(
        InvoiceLine.kind.in_(("usage", "late_usage", "trial")),
        InvoiceLine.period_start == period.start,
        InvoiceLine.unpriced_quantity.is_(None),  # a meter's unpriced line bills 0, late or not
    )
    prices = prices_of(plan)
    billed: dict[LineKey, Billed] = {}
    for row in await session.execute(query):
        index = _price_index(plan, row.meter_id, row.price_index)
        if index is None:
            continue
        key = (index, usage_lines.line_values(prices[index][0], row.group_values))
        before = billed.get(key, Billed())
        billed[key] = Billed(money.exact_add(before.quantity, row.quantity), before.amount + row.amount)
    return billed


def _price_index(plan: Plan, meter_id: str | None, stored: int | None) -> int | None:
    """A priced line's price; lines billed before prices were told apart have none stored, and
    their meter had one price then."""
    if stored is not None or meter_id is None:
        return stored
    return next((i for i, (price, _) in enumerate(prices_of(plan)) if price["meter_id"] == meter_id), None)


@dataclass(frozen=True)
class BilledAmounts:
    by_price: dict[int, int]  # what each price's lines billed (commitments.PRICE_KINDS)
    counted: int  # what counts toward the plan minimum (commitments.COUNTED_KINDS)
    commitment: int  # the minimum_commitment lines


async def billed_amounts(
    session: AsyncSession,
    subscription: Subscription,
    plan: Plan,
    period: periods.Period,
    *,
    exclude: str | None,
) -> BilledAmounts:
    """What finalized invoices have billed for one period, for its commitments: every line inside
    the period (a base fee line may cover a part of it, one per seat segment)."""
    kinds = commitments.COUNTED_KINDS | {commitments.MINIMUM_COMMITMENT}
    query = _billed_lines(
        subscription,
        exclude,
        InvoiceLine.kind,
        InvoiceLine.meter_id,
        InvoiceLine.price_index,
        sa.func.sum(InvoiceLine.amount),
    ).where(
        InvoiceLine.kind.in_(sorted(kinds)),
        InvoiceLine.period_start >= period.start,
        InvoiceLine.period_end <= period.end,
    )
    by_price: dict[int, int] = defaultdict(int)
    counted = commitment = 0
    for kind, meter_id, stored_index, amount in await session.execute(
        query.group_by(InvoiceLine.kind, InvoiceLine.meter_id, InvoiceLine.price_index)
    ):
        amount = int(amount)
        if kind == commitments.MINIMUM_COMMITMENT:
            commitment += amount
            continue
        counted += amount
        index = _price_index(plan, meter_id, stored_index)
        if kind in commitments.PRICE_KINDS and index is not None:
            by_price[index] += amount
    return BilledAmounts(dict(by_price), counted, commitment)


def _billed_lines(
    subscription: Subscription, exclude: str | None, *columns: sa.ColumnElement[Any] | Any
) -> sa.Select[Any]:
    """Lines of the subscription's finalized invoices, and of its successor's: a replaced
    subscription's late usage is billed on its successor's invoices (handover_late)."""
    owners = [subscription.id] + ([subscription.replaced_by] if subscription.replaced_by else [])
    query = (
        sa.select(*columns)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(
            Invoice.subscription_id.in_(owners),
            Invoice.status.in_(FINALIZED),
            # The invoice that closes a period lists it whole: its threshold invoices add nothing.
            Invoice.threshold_multiple.is_(None),
        )
    )
    return query.where(Invoice.id != exclude) if exclude else query
