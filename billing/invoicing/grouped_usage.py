"""The usage a plan's lines are rated on: per group for the meters whose prices need groups.

A meter is read per group (``usage.grouped_period_tallies``) only when one of the plan's prices
on it has ``filters`` or ``group_by``. On every other meter all events go to its one price, and
the tally over all groups, the cheaper read, is the same. ``lines.period_lines`` and
``lines.usage_so_far`` take the result as ``grouped``: meter id -> group key -> tally, where an
ungrouped read has the one key ``''``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.models import Plan
from billing.invoicing.plans import prices_of
from billing.invoicing.usage_lines import GroupedTallies, GroupKey
from billing.metering import usage
from billing.metering.models import Meter
from billing.metering.usage import Range, Tally

# customer id -> meter id -> group key -> tally
ByCustomer = dict[str, dict[str, dict[GroupKey, Tally]]]


def grouped_meters(plan: Plan) -> set[str]:
    """The meters of the plan whose prices tell events apart by group."""
    return {
        stored["meter_id"] for stored, _ in prices_of(plan) if stored.get("filters") or stored.get("group_by")
    }


async def read_groups(
    session: AsyncSession, tenant_id: str, customer_ids: Sequence[str], meters: Sequence[Meter], period: Range
) -> ByCustomer:
    """The period's tallies per group of these customers on these meters."""
    found: ByCustomer = defaultdict(lambda: defaultdict(dict))
    if customer_ids and meters:
        tallies = await usage.grouped_period_tallies(session, tenant_id, customer_ids, meters, period)
        for (customer_id, meter_id, key), tally in tallies.items():
            found[customer_id][meter_id][key] = tally
    return found


def combined(
    plan: Plan, flat: Mapping[str, Tally], groups: Mapping[str, Mapping[GroupKey, Tally]]
) -> GroupedTallies:
    """What the plan's lines take: the groups of the meters that need them, else the flat tallies."""
    needed = grouped_meters(plan)
    usage_of: dict[str, Mapping[GroupKey, Tally]] = {
        meter_id: {"": tally} for meter_id, tally in flat.items() if meter_id not in needed
    }
    usage_of.update({meter_id: tallies for meter_id, tallies in groups.items() if meter_id in needed})
    return usage_of


async def customer_usage(
    session: AsyncSession,
    tenant_id: str,
    customer_id: str,
    plan: Plan,
    meters: Mapping[str, Meter],
    period: Range,
) -> GroupedTallies:
    """One customer's usage of the plan's meters over the period, as its lines take it: in one read,
    per group when some meter needs groups (the others' groups are then added up here)."""
    if not grouped_meters(plan):
        by_series = await usage.period_tallies(
            session, tenant_id, [customer_id], list(meters.values()), period
        )
        return combined(plan, {meter_id: tally for (_, meter_id), tally in by_series.items()}, {})
    groups = (await read_groups(session, tenant_id, [customer_id], list(meters.values()), period)).get(
        customer_id, {}
    )
    flat: dict[str, Tally] = {}
    for meter_id, by_key in groups.items():
        total = flat[meter_id] = Tally()
        for tally in by_key.values():
            total.add(tally)
    return combined(plan, flat, groups)
