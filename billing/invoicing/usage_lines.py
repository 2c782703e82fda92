"""A plan's usage lines for one period, per price and group, and each meter's unpriced line (pure).

**Input.** ``tallies``: meter id -> group key -> the ``Tally`` of that group's events in the
period. A group key is the event's values of the meter's ``group_by``, in its order: a tuple
(``("eu", None)``) or its compact JSON text (``'["eu",null]'``); an ungrouped meter has the
one key ``()`` (or ``''``). ``fees``: the same keys -> the ``percentage.FeeTally`` of the
group's events, the fees computed with the price the group wins; read only for percentage
prices (without it, a percentage line bills 0).

**Output, in plan price order.** Each group goes to its winning price (``price_match``), onto
the line of its values of that price's ``group_by``; groups that fall on one line have their
tallies merged (sums and counts add, distinct values unite), so tiers and packages apply per
line. An ungrouped price has one line, zero included; a grouped one a line per value
combination that has events, in order of its values (null last). The price's floor or cap
line follows its lines and bounds their sum (all groups). After the last price of a meter, a
line at 0 with ``unpriced_quantity``, the meter's aggregation over the events no price
matched, when there are such events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.core import money
from billing.invoicing import commitments, percentage, periods, price_match, pricing
from billing.invoicing.line_draft import LineDraft
from billing.invoicing.models import Plan
from billing.invoicing.plans import Rate, prices_of
from billing.invoicing.price_checks import group_by_of
from billing.metering.models import Meter
from billing.metering.usage import Tally

GroupKey = tuple[str | None, ...] | str
GroupedTallies = Mapping[str, Mapping[GroupKey, Tally]]
GroupedFees = Mapping[str, Mapping[GroupKey, percentage.FeeTally]]


def quantity(tally: Tally | None, aggregation: str) -> Decimal:
    value = tally.value(aggregation) if tally is not None else None
    return Decimal(0) if value is None else value


def group_values(key: GroupKey | Sequence[str | None]) -> price_match.GroupValues:
    if isinstance(key, str):
        return tuple(json.loads(key)) if key else ()
    return tuple(key)


@dataclass
class _Bucket:
    """The events of one line: their tally and, for a percentage price, their fees."""

    tally: Tally = field(default_factory=Tally)
    fees: percentage.FeeTally = field(default_factory=percentage.FeeTally)

    def add(self, tally: Tally, fees: percentage.FeeTally | None) -> None:
        if tally.partial is not None:
            self.tally.merge(tally.partial)
        self.tally.uniques |= tally.uniques
        if fees is not None:
            self.fees = self.fees.merge(fees)

    @property
    def has_events(self) -> bool:
        partial = self.tally.partial
        return bool(self.tally.uniques) or (partial is not None and partial.event_count > 0)


@dataclass
class _Meter:
    """One meter's groups, dealt to its prices' lines."""

    lines: dict[int, dict[price_match.GroupValues, _Bucket]] = field(default_factory=dict)
    unpriced: _Bucket = field(default_factory=_Bucket)


def usage_lines(
    plan: Plan,
    meters: Mapping[str, Meter],
    period: periods.Period,
    timezone: str,
    tallies: GroupedTallies,
    fees: GroupedFees,
    *,
    trial: bool = False,
    floors: bool = True,
    dated: periods.Period | None = None,
) -> list[LineDraft]:
    """The usage lines (``trial``: at zero, kind ``trial``, no floor or cap) of the period.
    ``floors=False``: caps only (a threshold invoice); ``dated``: the span the lines show when it
    is not the period (a threshold invoice's, so far). Bounds are always the period's."""
    span = dated or period
    priced = prices_of(plan)
    by_meter = _prices_by_meter(plan)
    dealt = _dealt(plan, meters, tallies, fees)
    lines: list[LineDraft] = []
    for index, (stored, rate) in enumerate(priced):
        meter = meters[stored["meter_id"]]
        group_by = tuple(stored.get("group_by") or ())
        buckets = dealt[meter.id].lines.get(index, {})
        if not group_by:
            buckets = {(): buckets.get((), _Bucket())}
        rated = _Rated(plan, meter, span, stored, rate, index)
        mine = [
            _line(rated, dict(zip(group_by, values, strict=True)), buckets[values], trial)
            for values in sorted(buckets, key=price_match.sort_key)
        ]
        lines += mine
        if not trial:
            bounds = commitments.price_bounds(stored, period, timezone)
            adjustment = commitments.bound_adjustment(
                sum(line.amount for line in mine), bounds, floors=floors
            )
            lines += bound_lines(meter, span, adjustment, price_index=index)
        unpriced = dealt[meter.id].unpriced
        if index == by_meter[meter.id][-1] and unpriced.has_events:
            lines.append(_unpriced_line(meter, span, unpriced.tally, trial))
    return lines


def _prices_by_meter(plan: Plan) -> dict[str, list[int]]:
    by_meter: dict[str, list[int]] = {}
    for index, (stored, _) in enumerate(prices_of(plan)):
        by_meter.setdefault(stored["meter_id"], []).append(index)
    return by_meter


def _dealt(
    plan: Plan, meters: Mapping[str, Meter], tallies: GroupedTallies, fees: GroupedFees
) -> dict[str, _Meter]:
    priced = prices_of(plan)
    return {
        meter_id: _deal(meters[meter_id], [priced[i][0] for i in indexes], indexes, tallies, fees)
        for meter_id, indexes in _prices_by_meter(plan).items()
    }


# A line of a period: its price's index in the plan and its values of the price's group_by.
LineKey = tuple[int, price_match.GroupValues]


def line_usage(
    plan: Plan, meters: Mapping[str, Meter], tallies: GroupedTallies, fees: GroupedFees
) -> dict[LineKey, tuple[Tally, percentage.FeeTally]]:
    """The events of each priced line that has some (unpriced events are left out: they bill 0)."""
    return {
        (index, values): (bucket.tally, bucket.fees)
        for dealt in _dealt(plan, meters, tallies, fees).values()
        for index, buckets in dealt.lines.items()
        for values, bucket in buckets.items()
    }


def rated_line(
    plan: Plan,
    meter: Meter,
    period: periods.Period,
    index: int,
    values: price_match.GroupValues,
    usage: tuple[Tally, percentage.FeeTally] | None,
) -> LineDraft:
    """The usage line of price ``index`` and group ``values`` over ``usage`` (none: at zero)."""
    stored, rate = prices_of(plan)[index]
    group_by = tuple(stored.get("group_by") or ())
    bucket = _Bucket() if usage is None else _Bucket(Tally(), percentage.FeeTally())
    if usage is not None:
        bucket.add(*usage)
    rated = _Rated(plan, meter, period, stored, rate, index)
    return _line(rated, dict(zip(group_by, values, strict=True)), bucket, trial=False)


def line_values(stored: Mapping[str, Any], group: Mapping[str, str | None] | None) -> price_match.GroupValues:
    """A stored line's group as values in its price's group_by order."""
    return tuple((group or {}).get(key) for key in stored.get("group_by") or ())


def _deal(
    meter: Meter,
    stored_prices: Sequence[dict[str, Any]],
    indexes: Sequence[int],
    tallies: GroupedTallies,
    fees: GroupedFees,
) -> _Meter:
    terms = [price_match.Terms.of(stored) for stored in stored_prices]
    meter_group_by = group_by_of(meter)
    fee_of = {group_values(key): tally for key, tally in fees.get(meter.id, {}).items()}
    dealt = _Meter()
    for key, tally in tallies.get(meter.id, {}).items():
        values = group_values(key)
        group = dict(zip(meter_group_by, values, strict=False))
        won = price_match.winner(terms, group)
        if won is None:
            dealt.unpriced.add(tally, None)
            continue
        line = price_match.project(group, terms[won].group_by)
        bucket = dealt.lines.setdefault(indexes[won], {}).setdefault(line, _Bucket())
        bucket.add(tally, fee_of.get(values))
    return dealt


@dataclass(frozen=True)
class _Rated:
    """A price as its lines are rated: with its plan, meter and period."""

    plan: Plan
    meter: Meter
    period: periods.Period
    stored: dict[str, Any]
    rate: Rate
    index: int


def _line(rated: _Rated, group: dict[str, str | None], bucket: _Bucket, trial: bool) -> LineDraft:
    rate, meter = rated.rate, rated.meter
    description = _description(rated, group)
    is_percentage = isinstance(rate, percentage.PercentagePrice)
    raw = quantity(bucket.tally, "sum" if is_percentage else meter.aggregation)
    line = LineDraft(
        kind="trial" if trial else "usage",
        meter_id=meter.id,
        description=f"{description} (trial)" if trial else description,
        quantity=raw,
        amount=0,
        period_start=rated.period.start,
        period_end=rated.period.end,
        price_index=rated.index,
        group=group or None,
    )
    if trial:
        return line
    if isinstance(rate, percentage.PercentagePrice):
        line.amount = bucket.fees.amount(rate.free_units)
    else:
        billed = pricing.charge(rate, raw, rated.plan.currency)
        line.quantity, line.amount, line.tiers = billed.quantity, billed.amount, tier_lines(billed)
    return line


def _description(rated: _Rated, group: dict[str, str | None]) -> str:
    parts = []
    if isinstance(rated.rate, percentage.PercentagePrice):
        parts.append(percentage.label(rated.rate, rated.plan.currency, rated.meter.unit))
    stored_filters = rated.stored.get("filters") or {}
    filters = {key: values for key, values in stored_filters.items() if key not in group}
    if filters:
        parts.append(", ".join(f"{key}={'|'.join(values)}" for key, values in filters.items()))
    if group:
        parts.append(price_match.describe(group.items()))
    return " · ".join([meter_label(rated.meter), *parts])


def _unpriced_line(meter: Meter, period: periods.Period, tally: Tally, trial: bool) -> LineDraft:
    unpriced = quantity(tally, meter.aggregation)
    description = f"{meter_label(meter)} · unpriced"
    return LineDraft(
        kind="trial" if trial else "usage",
        meter_id=meter.id,
        description=f"{description} (trial)" if trial else description,
        quantity=unpriced,
        amount=0,
        period_start=period.start,
        period_end=period.end,
        unpriced_quantity=unpriced,
    )


def bound_lines(
    meter: Meter,
    period: periods.Period,
    adjustment: int,
    *,
    kind: str | None = None,
    price_index: int | None = None,
) -> list[LineDraft]:
    """The floor (``price_minimum``) or cap (``price_maximum``) line of a price, when it binds."""
    if adjustment == 0:
        return []
    kind = kind or commitments.bound_kind(adjustment)
    label = "minimum spend" if kind == commitments.PRICE_MINIMUM else "maximum spend"
    return [
        LineDraft(
            kind=kind,
            meter_id=meter.id,
            description=f"{meter_label(meter)}, {label}",
            quantity=Decimal(1),
            amount=adjustment,
            period_start=period.start,
            period_end=period.end,
            price_index=price_index,
        )
    ]


def meter_label(meter: Meter) -> str:
    return f"{meter.name} ({meter.unit})" if meter.unit else meter.name


def tier_lines(billed: pricing.Charge) -> list[dict[str, Any]]:
    text = money.format_decimal
    return [
        {
            "up_to": None if t.up_to is None else text(t.up_to),
            "quantity": text(t.quantity),
            "unit_amount": text(t.unit_amount),
            "flat_amount": t.flat_amount,
            "amount": t.amount,
        }
        for t in billed.tiers
    ]
