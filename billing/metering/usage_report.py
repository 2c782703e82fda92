"""A customer's usage of one meter in hour (UTC) or day (the customer's zone) buckets, whole or
per group of the meter's ``group_by``, filtered by group values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import ValidationFailed
from billing.customers.service import get_customer
from billing.metering import groups, usage
from billing.metering.meters import get_meter
from billing.metering.models import Meter
from billing.metering.schemas import UsageOut, usage_out
from billing.tenants.service import get_tenant

MAX_BUCKETS = 1000
MAX_GROUPED_BUCKETS = 100_000  # over all groups of an answer
MAX_FILTER_VALUES = 100


@dataclass(frozen=True)
class GroupQuery:
    """``group_by`` keys to split the usage by, and ``filters``: key -> the values it may take
    (values OR within a key, AND across keys)."""

    group_by: Sequence[str] = ()
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)


async def usage_report(
    session: AsyncSession,
    tenant_id: str,
    customer_ref: str,
    meter_ref: str,
    start: datetime,
    end: datetime,
    granularity: str,
    query: GroupQuery | None = None,
) -> UsageOut:
    """Buckets of ``[start, end)``; the customer and the meter by id, external_id or key."""
    query = query or GroupQuery()
    customer = await get_customer(session, tenant_id, customer_ref)
    meter = await get_meter(session, tenant_id, meter_ref)
    _check(meter, query)
    zone = customer.timezone or (await get_tenant(session, tenant_id)).billing_timezone
    ranges = usage.hour_ranges(start, end) if granularity == "hour" else usage.day_ranges(start, end, zone)
    if len(ranges) > MAX_BUCKETS:
        raise ValidationFailed.field("to", f"at most {MAX_BUCKETS} buckets per request")
    timezone = "UTC" if granularity == "hour" else zone
    if not query.group_by and not query.filters:
        tallies = await usage.tallies(session, tenant_id, customer.id, meter, ranges)
        return usage_out(
            customer.id,
            meter,
            granularity=granularity,
            timezone=timezone,
            buckets=_buckets(meter, ranges, tallies),
        )
    by_group = _projected(
        meter, query, await usage.grouped_tallies(session, tenant_id, customer.id, meter, ranges)
    )
    if not query.group_by:
        whole = by_group.get((), {})
        return usage_out(
            customer.id,
            meter,
            granularity=granularity,
            timezone=timezone,
            buckets=_buckets(meter, ranges, whole),
        )
    if len(by_group) * len(ranges) > MAX_GROUPED_BUCKETS:
        raise ValidationFailed.field(
            "group_by",
            f"{len(by_group)} groups of {len(ranges)} buckets: at most {MAX_GROUPED_BUCKETS} buckets in all;"
            " narrow from and to, take days, or filter",
        )
    return usage_out(
        customer.id,
        meter,
        granularity=granularity,
        timezone=timezone,
        group_by=list(query.group_by),
        groups=[
            (dict(zip(query.group_by, values, strict=True)), _buckets(meter, ranges, by_group[values]))
            for values in sorted(by_group, key=_null_last)
        ],
    )


def _check(meter: Meter, query: GroupQuery) -> None:
    known = ", ".join(meter.group_by) if meter.group_by else "none"
    for n, key in enumerate(query.group_by):
        if key not in meter.group_by:
            raise ValidationFailed.field("group_by", f"'{key}' is not in the meter's group_by ({known})")
        if key in query.group_by[:n]:
            raise ValidationFailed.field("group_by", f"'{key}' is listed twice")
    for key, values in query.filters.items():
        name = f"filter[{key}]"
        if key not in meter.group_by:
            raise ValidationFailed.field(name, f"'{key}' is not in the meter's group_by ({known})")
        if not 1 <= len(values) <= MAX_FILTER_VALUES:
            raise ValidationFailed.field(name, f"takes 1 to {MAX_FILTER_VALUES} values")


def _projected(
    meter: Meter, query: GroupQuery, by_key: dict[str, dict[int, usage.Tally]]
) -> dict[groups.GroupValues, dict[int, usage.Tally]]:
    """The stored groups that pass the filters, merged by their values of ``query.group_by``."""
    position = {key: n for n, key in enumerate(meter.group_by)}
    wanted = [(position[key], set(values)) for key, values in query.filters.items()]
    picked = [position[key] for key in query.group_by]
    result: dict[groups.GroupValues, dict[int, usage.Tally]] = {}
    for group_key, tallies in by_key.items():
        values = groups.decode(group_key)
        if not all(values[n] in allowed for n, allowed in wanted):
            continue
        merged = result.setdefault(tuple(values[n] for n in picked), {})
        for index, tally in tallies.items():
            if index in merged:
                merged[index].add(tally)
            else:
                merged[index] = tally.copy()
    return result


def _null_last(values: groups.GroupValues) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in values)


def _buckets(
    meter: Meter, ranges: Sequence[usage.Range], tallies: Sequence[usage.Tally] | Mapping[int, usage.Tally]
) -> list[tuple[datetime, Decimal | None]]:
    """Each range's value; ``tallies`` by range index (a missing one: nothing happened)."""
    empty = usage.Tally()
    found = tallies if isinstance(tallies, Mapping) else dict(enumerate(tallies))
    return [(start, found.get(n, empty).value(meter.aggregation)) for n, (start, _) in enumerate(ranges)]
