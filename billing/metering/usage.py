"""Usage over time ranges: hourly rollups for whole hours, raw events where a range cuts an hour.

A range's edges need not fall on UTC hours (a day in Asia/Kolkata starts at 18:30 UTC, a
billing period in Asia/Kathmandu at :15), so an event always counts in the range that contains
its timestamp, whatever its rollup hour. Distinct counts are exact: the distinct values of the
whole range, never a sum of hourly counts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.db.queries import decimal_greatest, decimal_sum
from billing.metering import groups
from billing.metering.models import Meter
from billing.metering.rollups import Partial, hour_of, unique_key
from billing.metering.usage_models import UsageEvent, UsageRollup, UsageUniqueValue

HOUR = timedelta(hours=1)
Range = tuple[datetime, datetime]  # [start, end), aware UTC
SeriesKey = tuple[str, str]  # customer id, meter id
GroupedKey = tuple[str, str, str]  # customer id, meter id, group key (``groups.encode``)
# Stands in for the latest-event fields where the aggregation never reads them (sum, count, max).
_NEVER = datetime(1, 1, 1, tzinfo=UTC)
_ZERO = Decimal(0)


@dataclass
class Tally:
    """Everything the five aggregations need from the events of one range."""

    partial: Partial | None = None
    uniques: set[str] = field(default_factory=set)

    def merge(self, other: Partial) -> None:
        if self.partial is None:
            self.partial = Partial(**vars(other))
            return
        mine = self.partial
        mine.event_count += other.event_count
        mine.value_sum = money.exact_add(mine.value_sum, other.value_sum)
        mine.value_max = max(mine.value_max, other.value_max)
        if (other.latest_at, other.latest_seq) > (mine.latest_at, mine.latest_seq):
            mine.latest_value, mine.latest_at, mine.latest_seq = (
                other.latest_value,
                other.latest_at,
                other.latest_seq,
            )

    def add(self, other: Tally) -> None:
        """Fold in another tally of the same range (another group's)."""
        if other.partial is not None:
            self.merge(other.partial)
        self.uniques |= other.uniques

    def copy(self) -> Tally:
        return Tally(Partial(**vars(self.partial)) if self.partial else None, set(self.uniques))

    def value(self, aggregation: str) -> Decimal | None:
        """The meter's quantity for the range: 0 when nothing happened, except for max and latest."""
        if aggregation == "unique_count":
            return Decimal(len(self.uniques))
        if self.partial is None:
            return None if aggregation in ("max", "latest") else Decimal(0)
        return {
            "sum": self.partial.value_sum,
            "count": Decimal(self.partial.event_count),
            "max": self.partial.value_max,
            "latest": self.partial.latest_value,
        }[aggregation]


def hour_ranges(start: datetime, end: datetime) -> list[Range]:
    return _split(start, end, lambda t: hour_of(t) + HOUR)


def day_ranges(start: datetime, end: datetime, timezone: str) -> list[Range]:
    """Days in ``timezone`` (23 or 25 hours long around DST changes), as UTC ranges."""
    zone = ZoneInfo(timezone)

    def next_midnight(t: datetime) -> datetime:
        local = t.astimezone(zone)
        following = (local + timedelta(days=1)).date()
        return datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(start.tzinfo)

    return _split(start, end, next_midnight)


def _split(start: datetime, end: datetime, next_boundary: Callable[[datetime], datetime]) -> list[Range]:
    ranges = []
    cursor = start
    while cursor < end:
        boundary = min(next_boundary(cursor), end)
        ranges.append((cursor, boundary))
        cursor = boundary
    return ranges


async def tallies(
    session: AsyncSession, tenant_id: str, customer_id: str, meter: Meter, ranges: Sequence[Range]
) -> list[Tally]:
    """One tally per range, over all of a grouped meter's groups; ranges must be sorted and must
    not overlap."""
    result = [Tally() for _ in ranges]
    await _series_tallies(session, (tenant_id, customer_id, meter.id), meter, ranges, lambda _: result)
    return result


async def grouped_tallies(
    session: AsyncSession, tenant_id: str, customer_id: str, meter: Meter, ranges: Sequence[Range]
) -> dict[str, dict[int, Tally]]:
    """``tallies`` per group key (``groups.encode``), for the groups with usage in the ranges;
    sparse: each group's tallies by range index, for the ranges where it has usage."""
    result: dict[str, defaultdict[int, Tally]] = defaultdict(lambda: defaultdict(Tally))
    await _series_tallies(session, (tenant_id, customer_id, meter.id), meter, ranges, result.__getitem__)
    return {key: dict(found) for key, found in result.items()}


# The tallies (by range index) that a rollup row or an event of this group key adds to.
Slots = Callable[[str], list[Tally] | defaultdict[int, Tally]]


async def _series_tallies(
    session: AsyncSession, key: tuple[str, str, str], meter: Meter, ranges: Sequence[Range], slots: Slots
) -> None:
    if not ranges:
        return
    whole, cut = _classify_hours(ranges)
    await _add_rollups(session, key, whole, slots)
    await _add_raw_events(session, key, meter, ranges, cut, slots)
    if meter.aggregation == "unique_count":
        await _add_rollup_uniques(session, key, whole, slots)


def _classify_hours(ranges: Sequence[Range]) -> tuple[dict[datetime, int], list[datetime]]:
    """Hours lying wholly inside one range (hour -> range index), and the hours a range edge cuts."""
    whole: dict[datetime, int] = {}
    cut: list[datetime] = []
    for index, (start, end) in enumerate(ranges):
        hour = hour_of(start)
        if hour < start:
            cut.append(hour)
            hour += HOUR
        while hour + HOUR <= end:
            whole[hour] = index
            hour += HOUR
        if hour < end:
            cut.append(hour)
    return whole, sorted(set(cut))


def _in_hours(column: sa.ColumnElement[datetime], hours: Sequence[datetime]) -> sa.ColumnElement[bool]:
    """``column`` falls in one of ``hours``, as index-friendly bounds over runs of adjacent hours."""
    runs: list[list[datetime]] = []
    for hour in sorted(hours):
        if runs and runs[-1][1] == hour:
            runs[-1][1] = hour + HOUR
        else:
            runs.append([hour, hour + HOUR])
    return sa.or_(*[sa.and_(column >= lo, column < hi) for lo, hi in runs])


def _series(table: sa.Table, key: tuple[str, str, str]) -> sa.ColumnElement[bool]:
    """Rows of one (tenant, customer, meter) series."""
    return sa.and_(table.c.tenant_id == key[0], table.c.customer_id == key[1], table.c.meter_id == key[2])


async def _add_rollups(
    session: AsyncSession, key: tuple[str, str, str], whole: dict[datetime, int], slots: Slots
) -> None:
    if not whole:
        return
    table = UsageRollup.__table__
    query = sa.select(table).where(_series(table, key), _in_hours(table.c.hour, list(whole)))
    for row in await session.execute(query):
        slots(row.group_key)[whole[row.hour]].merge(
            Partial(
                row.event_count, row.value_sum, row.value_max, row.latest_value, row.latest_at, row.latest_seq
            )
        )


async def _add_rollup_uniques(
    session: AsyncSession, key: tuple[str, str, str], whole: dict[datetime, int], slots: Slots
) -> None:
    if not whole:
        return
    table = UsageUniqueValue.__table__
    query = sa.select(table.c.hour, table.c.group_key, table.c.value).where(
        _series(table, key), _in_hours(table.c.hour, list(whole))
    )
    for row in await session.execute(query):
        slots(row.group_key)[whole[row.hour]].uniques.add(row.value)


async def _add_raw_events(
    session: AsyncSession,
    key: tuple[str, str, str],
    meter: Meter,
    ranges: Sequence[Range],
    cut: list[datetime],
    slots: Slots,
) -> None:
    if not cut:
        return
    table = UsageEvent.__table__
    query = sa.select(table.c.value, table.c.timestamp, table.c.seq, table.c.properties).where(
        _series(table, key), _in_hours(table.c.timestamp, cut)
    )
    starts = [start for start, _ in ranges]
    for row in await session.execute(query):
        index = _range_index(starts, ranges, row.timestamp)
        if index is not None:
            fold_event(slots(groups.group_key(row.properties, meter.group_by))[index], meter, row)


def _range_index(starts: list[datetime], ranges: Sequence[Range], at: datetime) -> int | None:
    index = bisect_right(starts, at) - 1
    if index < 0 or at >= ranges[index][1]:
        return None
    return index


async def period_tallies(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    period: Range,
) -> dict[SeriesKey, Tally]:
    """One tally per (customer, meter) over one range, for many customers at once, over all of
    a grouped meter's groups.

    Sums, counts and maxima of whole hours are aggregated in SQL; only the latest values,
    the distinct values and the events of the hours cut by the range's edges come back as rows.
    """
    result = await whole_hour_tallies(session, tenant_id, customer_ids, meters, period)
    await add_cut_hours(session, tenant_id, customer_ids, meters, period, result)
    return result


async def grouped_period_tallies(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    period: Range,
) -> dict[GroupedKey, Tally]:
    """``period_tallies`` per group: one tally per (customer, meter, group key) that had usage,
    the group key being ``groups.encode`` of the event's group ("" on meters without group_by)."""
    result: dict[GroupedKey, Tally] = defaultdict(Tally)
    whole, cut = _classify_hours([period])
    if not customer_ids or not meters:
        return result
    if whole:
        hours = (min(whole), max(whole) + HOUR)
        await _whole_hours(session, _Batch(tenant_id, customer_ids, meters, hours, grouped=True), result)
    if cut:
        await _fold_raw_events(session, tenant_id, customer_ids, meters, period, cut, result, grouped=True)
    return result


async def whole_hour_tallies(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str] | None,
    meters: Sequence[Meter],
    period: Range,
) -> dict[SeriesKey, Tally]:
    """The part of ``period_tallies`` that comes from the rollups of the range's whole hours;
    ``customer_ids`` None means every customer of the tenant (a scan with no membership test
    per row, for when most of them are wanted)."""
    result: dict[SeriesKey, Tally] = defaultdict(Tally)
    whole, _ = _classify_hours([period])
    if (customer_ids is not None and not customer_ids) or not meters or not whole:
        return result
    hours = (min(whole), max(whole) + HOUR)
    await _whole_hours(session, _Batch(tenant_id, customer_ids, meters, hours), result)
    return result


@dataclass(frozen=True)
class _Batch:
    """Rollup rows of these customers' (None: all) series of these meters in [hours), by series
    or, ``grouped``, by series and group."""

    tenant_id: str
    customer_ids: Sequence[str] | None
    meters: Sequence[Meter]
    hours: Range
    grouped: bool = False

    def key(self, row: Any) -> Any:
        return (
            (row.customer_id, row.meter_id, row.group_key)
            if self.grouped
            else (row.customer_id, row.meter_id)
        )

    def columns(self, table: sa.Table) -> list[sa.ColumnElement[Any]]:
        keys: list[sa.ColumnElement[Any]] = [table.c.customer_id, table.c.meter_id]
        return [*keys, table.c.group_key] if self.grouped else keys

    def where(self, table: sa.Table, meters: Sequence[Meter]) -> sa.ColumnElement[bool]:
        return _batch_filter(table, self.tenant_id, self.customer_ids, meters, self.hours)


async def _whole_hours(session: AsyncSession, batch: _Batch, result: dict[Any, Tally]) -> None:
    await _aggregate_rollups(session, batch, result)
    await _fold_latest_rollups(session, batch, result)
    await _collect_uniques(session, batch, result)


def cuts_hours(period: Range) -> bool:
    """Whether the range's edges cut UTC hours (an offset that is not whole hours)."""
    return bool(_classify_hours([period])[1])


async def add_cut_hours(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    period: Range,
    result: dict[SeriesKey, Tally],
) -> None:
    """Fold into ``result`` the raw events of the hours the range's edges cut (an offset that is
    not whole hours): the other part of ``period_tallies``, always for named customers, as the
    events are indexed by customer."""
    _, cut = _classify_hours([period])
    if cut and customer_ids and meters:
        await _fold_raw_events(session, tenant_id, customer_ids, meters, period, cut, result)


def _batch_filter(
    table: sa.Table,
    tenant_id: str,
    customer_ids: Sequence[str] | None,
    meters: Sequence[Meter],
    hours: Range | None = None,
) -> sa.ColumnElement[bool]:
    """Rows of these customers' (None: all) series of these meters, in [hours) when given."""
    conditions = [table.c.tenant_id == tenant_id, table.c.meter_id.in_([m.id for m in meters])]
    if customer_ids is not None:
        conditions.append(table.c.customer_id.in_(customer_ids))
    if hours is not None:
        conditions += [table.c.hour >= hours[0], table.c.hour < hours[1]]
    return sa.and_(*conditions)


async def _aggregate_rollups(session: AsyncSession, batch: _Batch, result: dict[Any, Tally]) -> None:
    """Count, sum and (for max meters) maximum of whole hours, per series (or group), in SQL."""
    summed = [m for m in batch.meters if m.aggregation in ("sum", "count", "max")]
    if not summed:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and batch.customer_ids is None:
        await session.execute(sa.text("SET LOCAL work_mem = '64MB'"))
    rows = (await session.execute(_aggregate_query(dialect, batch, summed))).all()
    for row in rows:
        top = _ZERO if row.value_max is None else row.value_max  # only max meters read it
        partial = Partial(int(row.event_count), row.value_sum, top, top, _NEVER, 0)
        result[batch.key(row)].merge(partial)


def _aggregate_query(dialect: str, batch: _Batch, meters: Sequence[Meter]) -> sa.Select[Any]:
    table = UsageRollup.__table__
    maxima = [m.id for m in meters if m.aggregation == "max"]
    # The greatest value only where a max meter reads it: on SQLite each is a call into Python.
    top = (
        decimal_greatest(dialect, sa.case((table.c.meter_id.in_(maxima), table.c.value_max)))
        if maxima
        else sa.null()
    )
    keys = batch.columns(table)
    return (
        sa.select(
            *keys,
            sa.func.sum(table.c.event_count).label("event_count"),
            decimal_sum(dialect, table.c.value_sum).label("value_sum"),
            top.label("value_max"),
        )
        .where(batch.where(table, meters))
        .group_by(*keys)
    )


async def _fold_latest_rollups(session: AsyncSession, batch: _Batch, result: dict[Any, Tally]) -> None:
    latest = [m for m in batch.meters if m.aggregation == "latest"]
    if not latest:
        return
    table = UsageRollup.__table__
    for row in await session.execute(sa.select(table).where(batch.where(table, latest))):
        result[batch.key(row)].merge(
            Partial(
                row.event_count, row.value_sum, row.value_max, row.latest_value, row.latest_at, row.latest_seq
            )
        )


async def _collect_uniques(session: AsyncSession, batch: _Batch, result: dict[Any, Tally]) -> None:
    distinct = [m for m in batch.meters if m.aggregation == "unique_count"]
    if not distinct:
        return
    table = UsageUniqueValue.__table__
    query = sa.select(*batch.columns(table), table.c.value).where(batch.where(table, distinct))
    for row in await session.execute(query):
        result[batch.key(row)].uniques.add(row.value)


async def _fold_raw_events(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    period: Range,
    cut: list[datetime],
    result: dict[Any, Tally],
    *,
    grouped: bool = False,
) -> None:
    table = UsageEvent.__table__
    query = sa.select(
        table.c.customer_id,
        table.c.meter_id,
        table.c.value,
        table.c.timestamp,
        table.c.seq,
        table.c.properties,
    ).where(
        _batch_filter(table, tenant_id, customer_ids, meters),
        _in_hours(table.c.timestamp, cut),
        table.c.timestamp >= period[0],
        table.c.timestamp < period[1],
    )
    by_id = {m.id: m for m in meters}
    for row in await session.execute(query):
        meter = by_id[row.meter_id]
        if grouped:
            key: Any = (row.customer_id, row.meter_id, groups.group_key(row.properties, meter.group_by))
        else:
            key = (row.customer_id, row.meter_id)
        fold_event(result[key], meter, row)


def fold_event(tally: Tally, meter: Meter, row: sa.Row[*tuple[Any, ...]]) -> None:
    """Add one raw event (a row with value, timestamp, seq and properties) to a tally."""
    tally.merge(Partial(1, row.value, row.value, row.value, row.timestamp, row.seq))
    if meter.aggregation == "unique_count":
        raw = (row.properties or {}).get(meter.unique_property or "")
        if raw is not None:
            tally.uniques.add(unique_key(raw))


@dataclass(frozen=True)
class FeeRead:
    """The fees of one group's events over a range (percentage prices): their exact total in
    minor units, their count, and ``((timestamp, seq), fee)`` of the earliest of them, in order."""

    total: Decimal = _ZERO
    events: int = 0
    earliest: tuple[tuple[tuple[datetime, int], Decimal], ...] = ()


# Events read per query while looking for the earliest events of each group of a grouped meter.
_EARLIEST_PAGE = 1000


async def grouped_period_fees(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    period: Range,
    free_units: Mapping[str, int],
) -> dict[GroupedKey, FeeRead]:
    """The fees per (customer, meter, group key) with events in the range: totals from the
    rollups of whole hours and from the raw events of the hours the range cuts; and, on a meter
    with ``free_units`` > 0, the first ``free_units`` events of each group key (or all of them)
    in (timestamp, seq) order, read from the raw events."""
    totals: dict[GroupedKey, list[Any]] = defaultdict(lambda: [_ZERO, 0])
    if not customer_ids or not meters:
        return {}
    whole, cut = _classify_hours([period])
    if whole:
        await _whole_hour_fees(
            session, tenant_id, customer_ids, meters, (min(whole), max(whole) + HOUR), totals
        )
    if cut:
        await _cut_hour_fees(session, tenant_id, customer_ids, meters, period, cut, totals)
    found = {key: FeeRead(total, events) for key, (total, events) in totals.items()}
    for meter in meters:
        free = free_units.get(meter.id, 0)
        if free <= 0:
            continue
        for customer_id in customer_ids:
            wanted = {
                key[2]: min(free, read.events)
                for key, read in found.items()
                if key[0] == customer_id and key[1] == meter.id
            }
            if not wanted:
                continue
            listed = await _earliest_fees(session, (tenant_id, customer_id, meter.id), meter, period, wanted)
            for group_key, earliest in listed.items():
                read = found[(customer_id, meter.id, group_key)]
                found[(customer_id, meter.id, group_key)] = FeeRead(read.total, read.events, tuple(earliest))
    return found


async def _whole_hour_fees(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    hours: Range,
    totals: dict[GroupedKey, list[Any]],
) -> None:
    table = UsageRollup.__table__
    keys = [table.c.customer_id, table.c.meter_id, table.c.group_key]
    query = (
        sa.select(
            *keys,
            sa.func.sum(table.c.event_count).label("events"),
            decimal_sum(session.get_bind().dialect.name, table.c.fee_sum).label("fees"),
        )
        .where(_batch_filter(table, tenant_id, customer_ids, meters, hours))
        .group_by(*keys)
    )
    for row in await session.execute(query):
        acc = totals[(row.customer_id, row.meter_id, row.group_key)]
        acc[0] = money.exact_add(acc[0], row.fees or _ZERO)
        acc[1] += int(row.events)


async def _cut_hour_fees(
    session: AsyncSession,
    tenant_id: str,
    customer_ids: Sequence[str],
    meters: Sequence[Meter],
    period: Range,
    cut: list[datetime],
    totals: dict[GroupedKey, list[Any]],
) -> None:
    table = UsageEvent.__table__
    query = sa.select(table.c.customer_id, table.c.meter_id, table.c.fee, table.c.properties).where(
        _batch_filter(table, tenant_id, customer_ids, meters),
        _in_hours(table.c.timestamp, cut),
        table.c.timestamp >= period[0],
        table.c.timestamp < period[1],
    )
    by_id = {m.id: m for m in meters}
    for row in await session.execute(query):
        group_key = groups.group_key(row.properties, by_id[row.meter_id].group_by)
        acc = totals[(row.customer_id, row.meter_id, group_key)]
        if row.fee is not None:
            acc[0] = money.exact_add(acc[0], row.fee)
        acc[1] += 1


async def _earliest_fees(
    session: AsyncSession, key: tuple[str, str, str], meter: Meter, period: Range, wanted: dict[str, int]
) -> dict[str, list[tuple[tuple[datetime, int], Decimal]]]:
    """The first ``wanted[group key]`` events' fees of each group key, in (timestamp, seq) order,
    read in pages until every group key has its count."""
    table = UsageEvent.__table__
    columns = [table.c.timestamp, table.c.seq, table.c.fee]
    if meter.group_by:
        columns.append(table.c.properties)
    listed: dict[str, list[tuple[tuple[datetime, int], Decimal]]] = {group_key: [] for group_key in wanted}
    short = {group_key for group_key, count in wanted.items() if count > 0}
    page = _EARLIEST_PAGE if meter.group_by else max(wanted.values())
    after: tuple[datetime, int] | None = None
    while short:
        query = (
            sa.select(*columns)
            .where(_series(table, key), table.c.timestamp >= period[0], table.c.timestamp < period[1])
            .order_by(table.c.timestamp, table.c.seq)
            .limit(page)
        )
        if after is not None:
            query = query.where(
                sa.or_(
                    table.c.timestamp > after[0],
                    sa.and_(table.c.timestamp == after[0], table.c.seq > after[1]),
                )
            )
        rows = (await session.execute(query)).all()
        for row in rows:
            group_key = (
                groups.group_key(row.properties, meter.group_by) if meter.group_by else groups.NO_GROUP
            )
            if group_key in short:
                found = listed[group_key]
                found.append(((row.timestamp, row.seq), _ZERO if row.fee is None else row.fee))
                if len(found) >= wanted[group_key]:
                    short.discard(group_key)
        if len(rows) < page:
            break
        after = (rows[-1].timestamp, rows[-1].seq)
    return listed
