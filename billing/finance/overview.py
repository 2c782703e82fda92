"""The overview page: what is owed now, revenue and dunning recovery per month, usage per day.

Months and days are those of the tenant's ``billing_timezone``. Revenue invoiced is the total of
finalized invoices (open, paid, uncollectible) net of their credit notes, by the month they were
finalized; collected is
succeeded payments less succeeded refunds, each by the month it completed. A month's recovery
rate is the share of the dunning cases opened (first failure) that month that are recovered.
Usage per day comes from the hourly rollups (and, for hours a day's edge cuts, from the events),
combined over all customers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.context import AppContext
from billing.core.db.queries import decimal_greatest, decimal_sum
from billing.dunning.models import DunningCase
from billing.invoicing import periods
from billing.invoicing.invoices import overdue_at
from billing.invoicing.models import Invoice
from billing.metering import usage
from billing.metering.models import Meter
from billing.metering.rollups import hour_of
from billing.metering.usage import HOUR
from billing.metering.usage_models import UsageEvent, UsageRollup
from billing.payments.models import Payment, Refund
from billing.tenants.service import get_tenant

MONTHS = 12
NO_VALUE = "\N{EN DASH}"
USAGE_DAYS = 30
FINALIZED = ("open", "paid", "uncollectible")
CASE_COLUMNS = ("recovered", "exhausted", "active", "canceled")
COMBINED = ("sum", "count", "max")  # aggregations that combine over customers hour by hour
CUSTOMER_BATCH = 500  # customers per usage query, to keep IN lists short


@dataclass(frozen=True)
class Month:
    start: datetime
    end: datetime
    local: date

    @property
    def label(self) -> str:
        return f"{self.local:%Y-%m}"


@dataclass(frozen=True)
class Owed:
    currency: str
    amount_due: int
    invoices: int


@dataclass(frozen=True)
class Revenue:
    currency: str
    invoiced: list[int]
    paid: list[int]
    refunded: list[int]

    @property
    def collected(self) -> list[int]:
        return [paid - refunded for paid, refunded in zip(self.paid, self.refunded, strict=True)]


@dataclass(frozen=True)
class Recovery:
    month: Month
    counts: dict[str, int]

    @property
    def opened(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> Decimal | None:
        """Recovered cases in percent of those opened, one decimal, exact; None without cases."""
        if not self.opened:
            return None
        tenths, rest = divmod(1000 * self.counts["recovered"], self.opened)
        return Decimal(tenths + (2 * rest >= self.opened)).scaleb(-1)


@dataclass(frozen=True)
class DailyUsage:
    meter: Meter
    values: list[Decimal | None]

    @property
    def texts(self) -> list[str]:
        return [NO_VALUE if value is None else money.format_decimal(value) for value in self.values]


@dataclass(frozen=True)
class Overview:
    timezone: str
    currency: str
    owed: list[Owed]
    overdue: int
    in_dunning: int
    months: list[Month]
    revenue: list[Revenue]
    recovery: list[Recovery]
    days: list[date]
    usage: list[DailyUsage]


async def load(ctx: AppContext, tenant_id: str) -> Overview:
    now = ctx.clock.now()
    async with ctx.database.read() as session:
        tenant = await get_tenant(session, tenant_id)
        zone = tenant.billing_timezone
        months = await _months(session, tenant_id, zone, now)
        days, daily = await _daily_usage(session, tenant_id, zone, now)
        return Overview(
            timezone=zone,
            currency=tenant.currency,
            owed=await _owed(session, tenant_id),
            overdue=await _count(session, Invoice, tenant_id, overdue_at(now)),
            in_dunning=await _count(session, DunningCase, tenant_id, DunningCase.status == "active"),
            months=months,
            revenue=await _revenue(session, tenant_id, months) or [_no_revenue(tenant.currency, months)],
            recovery=await _recovery(session, tenant_id, months),
            days=days,
            usage=daily,
        )


# --- what is owed now ----------------------------------------------------------------------------


async def _owed(session: AsyncSession, tenant_id: str) -> list[Owed]:
    query = (
        sa.select(Invoice.currency, sa.func.sum(Invoice.amount_due), sa.func.count())
        .where(Invoice.tenant_id == tenant_id, Invoice.status == "open")
        .group_by(Invoice.currency)
        .order_by(Invoice.currency)
    )
    return [Owed(currency, int(due), int(n)) for currency, due, n in await session.execute(query)]


async def _count(session: AsyncSession, model: Any, tenant_id: str, *where: sa.ColumnElement[bool]) -> int:
    query = sa.select(sa.func.count()).select_from(model).where(model.tenant_id == tenant_id, *where)
    return int(await session.scalar(query) or 0)


# --- months ----------------------------------------------------------------------------------------


async def _months(session: AsyncSession, tenant_id: str, zone: str, now: datetime) -> list[Month]:
    """The last twelve months up to the current one, or fewer: none before the first finalized invoice."""
    first = await session.scalar(
        sa.select(sa.func.min(Invoice.finalized_at)).where(
            Invoice.tenant_id == tenant_id, Invoice.finalized_at.is_not(None)
        )
    )
    earliest = periods.month_start(min(first or now, now), zone)
    start = periods.month_start(now, zone)
    months: list[Month] = []
    while len(months) < MONTHS and start >= earliest:
        end = periods.next_month_start(start, zone)
        months.insert(0, Month(start, end, start.astimezone(ZoneInfo(zone)).date()))
        start = periods.month_start(start - timedelta(microseconds=1), zone)
    return months


def _bucketed(
    column: Any, ranges: Sequence[usage.Range], columns: Sequence[Any], *where: sa.ColumnElement[bool]
) -> sa.Subquery:
    """``columns`` of the rows whose ``column`` falls in the consecutive ``ranges``, with the index of
    its range as ``bucket``.

    A subquery, so that the outer query groups by a plain column: PostgreSQL does not see two
    renderings of one CASE with bound parameters as the same grouping expression.
    """
    whens = [(column < end, i) for i, (_, end) in enumerate(ranges[:-1])]
    index = sa.case(*whens, else_=len(ranges) - 1) if whens else sa.literal(0)
    return (
        sa.select(index.label("bucket"), *columns)
        .where(column >= ranges[0][0], column < ranges[-1][1], *where)
        .subquery()
    )


async def _monthly_sums(
    session: AsyncSession, rows: sa.Subquery, months: Sequence[Month]
) -> dict[str, list[int]]:
    """Per currency, the sum of ``rows.amount`` in each month."""
    query = sa.select(rows.c.bucket, rows.c.currency, sa.func.sum(rows.c.amount)).group_by(
        rows.c.bucket, rows.c.currency
    )
    sums: dict[str, list[int]] = {}
    for month, currency, total in await session.execute(query):
        sums.setdefault(currency, [0] * len(months))[int(month)] = int(total)
    return sums


def _net_of_credit_notes() -> sa.ColumnElement[int]:
    """An invoice's total less its credit notes, before or after payment."""
    return Invoice.total - Invoice.pre_payment_credit_notes_amount - Invoice.post_payment_credit_notes_amount


async def _revenue(session: AsyncSession, tenant_id: str, months: list[Month]) -> list[Revenue]:
    spans = _spans(months)
    invoiced = _bucketed(
        Invoice.finalized_at,
        spans,
        (Invoice.currency, _net_of_credit_notes().label("amount")),
        Invoice.tenant_id == tenant_id,
        Invoice.status.in_(FINALIZED),
    )
    paid = _bucketed(
        Payment.completed_at,
        spans,
        (Payment.currency, Payment.amount),
        Payment.tenant_id == tenant_id,
        Payment.status == "succeeded",
    )
    refunded = _bucketed(
        Refund.completed_at,
        spans,
        (Refund.currency, Refund.amount),
        Refund.tenant_id == tenant_id,
        Refund.status == "succeeded",
    )
    found = [await _monthly_sums(session, rows, months) for rows in (invoiced, paid, refunded)]
    zeros = [0] * len(months)
    currencies = sorted({currency for sums in found for currency in sums})
    return [Revenue(currency, *(sums.get(currency, zeros) for sums in found)) for currency in currencies]


def _spans(months: Sequence[Month]) -> list[usage.Range]:
    return [(month.start, month.end) for month in months]


def _no_revenue(currency: str, months: Sequence[Month]) -> Revenue:
    return Revenue(currency, [0] * len(months), [0] * len(months), [0] * len(months))


async def _recovery(session: AsyncSession, tenant_id: str, months: list[Month]) -> list[Recovery]:
    rows = _bucketed(
        DunningCase.first_failed_at, _spans(months), (DunningCase.status,), DunningCase.tenant_id == tenant_id
    )
    query = sa.select(rows.c.bucket, rows.c.status, sa.func.count()).group_by(rows.c.bucket, rows.c.status)
    counts = [dict.fromkeys(CASE_COLUMNS, 0) for _ in months]
    for month, status, n in await session.execute(query):
        counts[int(month)][status] = int(n)
    return [Recovery(month, count) for month, count in zip(months, counts, strict=True)]


# --- usage per day ---------------------------------------------------------------------------------


async def _daily_usage(
    session: AsyncSession, tenant_id: str, zone: str, now: datetime
) -> tuple[list[date], list[DailyUsage]]:
    """Each meter's usage on each of the last 30 local days (today included), over all customers.

    Sums, counts and maxima combine over customers hour by hour, so they are aggregated for the
    whole tenant at once; distinct counts and latest values are each customer's own, so they come
    from the usage queries customer by customer and are added up.
    """
    today = now.astimezone(ZoneInfo(zone)).date()
    days = [today - timedelta(days=USAGE_DAYS - 1 - i) for i in range(USAGE_DAYS)]
    ranges = usage.day_ranges(_midnight(days[0], zone), _midnight(today + timedelta(days=1), zone), zone)
    meters = list(
        await session.scalars(sa.select(Meter).where(Meter.tenant_id == tenant_id).order_by(Meter.key))
    )
    combined = [meter for meter in meters if meter.aggregation in COMBINED]
    values = await _tenant_days(session, tenant_id, combined, ranges) if combined else {}
    own = [meter for meter in meters if meter.aggregation not in COMBINED]
    if own:
        values |= await _customer_days(session, tenant_id, own, ranges)
    return days, [DailyUsage(meter, values[meter.id]) for meter in meters]


async def _tenant_days(
    session: AsyncSession, tenant_id: str, meters: Sequence[Meter], ranges: Sequence[usage.Range]
) -> dict[str, list[Decimal | None]]:
    """Sum, count and max meters per day: whole hours from the rollups, in SQL (one query per
    aggregation, so that each computes only its own measure); the hours that a day's edge cuts
    (zones with a half-hour offset) from their events."""
    cut = sorted({hour_of(edge) for edge in _edges(ranges) if hour_of(edge) != edge})
    table = UsageRollup.__table__
    dialect = session.get_bind().dialect.name
    found: dict[tuple[str, int], Decimal] = {}
    for aggregation in COMBINED:
        chosen = [meter.id for meter in meters if meter.aggregation == aggregation]
        if not chosen:
            continue
        where = [table.c.tenant_id == tenant_id, table.c.meter_id.in_(chosen)]
        columns = (table.c.meter_id, table.c.event_count, table.c.value_sum, table.c.value_max)
        rows = _bucketed(table.c.hour, ranges, columns, *where, *([table.c.hour.not_in(cut)] if cut else []))
        measure = {
            "sum": decimal_sum(dialect, rows.c.value_sum),
            "count": sa.func.sum(rows.c.event_count),
            "max": decimal_greatest(dialect, rows.c.value_max),
        }[aggregation]
        query = sa.select(rows.c.bucket, rows.c.meter_id, measure).group_by(rows.c.bucket, rows.c.meter_id)
        for day, meter_id, value in await session.execute(query):
            found[(meter_id, int(day))] = Decimal(value)
    if cut:
        await _fold_cut_hours(session, tenant_id, meters, ranges, cut, found)
    empty = {"sum": Decimal(0), "count": Decimal(0), "max": None}
    return {
        meter.id: [found.get((meter.id, day), empty[meter.aggregation]) for day in range(len(ranges))]
        for meter in meters
    }


async def _fold_cut_hours(
    session: AsyncSession,
    tenant_id: str,
    meters: Sequence[Meter],
    ranges: Sequence[usage.Range],
    cut: Sequence[datetime],
    found: dict[tuple[str, int], Decimal],
) -> None:
    table = UsageEvent.__table__
    query = sa.select(table.c.meter_id, table.c.value, table.c.timestamp).where(
        table.c.tenant_id == tenant_id,
        table.c.meter_id.in_([meter.id for meter in meters]),
        sa.or_(*[sa.and_(table.c.timestamp >= hour, table.c.timestamp < hour + HOUR) for hour in cut]),
        table.c.timestamp >= ranges[0][0],
        table.c.timestamp < ranges[-1][1],
    )
    aggregations = {meter.id: meter.aggregation for meter in meters}
    starts = [start for start, _ in ranges]
    for meter_id, value, at in await session.execute(query):
        key, aggregation = (meter_id, bisect_right(starts, at) - 1), aggregations[meter_id]
        value = Decimal(1) if aggregation == "count" else value
        if key not in found:
            found[key] = value
        elif aggregation == "max":
            found[key] = max(found[key], value)
        else:
            found[key] = money.exact_add(found[key], value)


async def _customer_days(
    session: AsyncSession, tenant_id: str, meters: Sequence[Meter], ranges: Sequence[usage.Range]
) -> dict[str, list[Decimal | None]]:
    """Distinct-count and latest meters per day: each customer's value, added up over customers
    (distinct values belong to their customer; ``latest`` adds each customer's last reading)."""
    customers = await _customers_with_usage(session, tenant_id, meters, ranges[0][0], ranges[-1][1])
    aggregations = {meter.id: meter.aggregation for meter in meters}
    values: dict[str, list[Decimal | None]] = {meter.id: [] for meter in meters}
    for day in ranges:
        per_meter: dict[str, list[Decimal]] = defaultdict(list)
        for batch in _batches(customers):
            tallies = await usage.period_tallies(session, tenant_id, batch, meters, day)
            for (_, meter_id), tally in tallies.items():
                value = tally.value(aggregations[meter_id])
                if value is not None:
                    per_meter[meter_id].append(value)
        for meter in meters:
            known = per_meter[meter.id]
            empty = None if meter.aggregation == "latest" else Decimal(0)
            values[meter.id].append(money.exact_sum(known) if known else empty)
    return values


def _edges(ranges: Sequence[usage.Range]) -> list[datetime]:
    return [start for start, _ in ranges] + [ranges[-1][1]]


def _midnight(day: date, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


async def _customers_with_usage(
    session: AsyncSession, tenant_id: str, meters: Sequence[Meter], start: datetime, end: datetime
) -> list[str]:
    query = (
        sa.select(UsageRollup.customer_id)
        .where(
            UsageRollup.tenant_id == tenant_id,
            UsageRollup.meter_id.in_([meter.id for meter in meters]),
            UsageRollup.hour >= hour_of(start),
            UsageRollup.hour < end,
        )
        .distinct()
        .order_by(UsageRollup.customer_id)
    )
    return list(await session.scalars(query))


def _batches(items: list[str]) -> list[list[str]]:
    return [items[i : i + CUSTOMER_BATCH] for i in range(0, len(items), CUSTOMER_BATCH)]
