"""An invoice's lines from a plan and usage tallies: base fee, usage, late usage, and the
commitments that bound them (a price's floor and cap, the plan's minimum; see commitments).

Each line's amount is rounded once (in pricing); totals are sums of rounded lines. A late
line prices what late events add to an already invoiced period under the same plan:
charge(billed + late) - charge(billed), so tiers stay right across all of that period's lines.

A threshold invoice (progressive billing) rates the period so far with ``usage_lines(...,
floors=False)``: usage on the period's cumulative quantities, so tiers never restart, capped but
never floored. It and the invoice that closes the period then subtract what the period's earlier
threshold invoices billed with one ``already_billed`` line; caps hold across them because every
one of them rates the cumulative quantities. Price floors and the plan minimum apply only on the
invoice that closes the period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from billing.core import money
from billing.invoicing import commitments, percentage, periods, pricing, schedule, usage_lines
from billing.invoicing.line_draft import LineDraft as LineDraft
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import Rate, prices_of
from billing.metering.models import Meter
from billing.metering.usage import Tally


@dataclass(frozen=True)
class LatePeriod:
    """A period already invoiced, its quantities now, and what its invoices billed so far."""

    period: periods.Period
    tallies: Mapping[str, Tally]  # meter id -> tally of every event of the period
    billed: Mapping[str, Decimal]  # meter id -> quantity billed on finalized invoices
    # meter id -> what its price's lines (usage, late usage, floor and cap) billed for the period
    billed_amounts: Mapping[str, int] = field(default_factory=dict)
    counted: int = 0  # what billed lines count toward the plan minimum (commitments.COUNTED_KINDS)
    commitment: int = 0  # the minimum_commitment lines billed for the period
    # A percentage price's meter: the fees of every event of the period now, and of those billed.
    fees: Mapping[str, percentage.FeeTally] = field(default_factory=dict)
    billed_fees: Mapping[str, percentage.FeeTally] = field(default_factory=dict)


def period_lines(
    plan: Plan,
    meters: Mapping[str, Meter],
    period: periods.Period,
    sub: Subscription,
    tallies: Mapping[str, Tally],
    grouped: usage_lines.GroupedTallies | None = None,
    fees: usage_lines.GroupedFees | None = None,
) -> list[LineDraft]:
    """The base fee (prorated, per seat segment) and the usage lines of every price (see
    ``usage_lines``), each price followed by its floor or cap line; then the plan minimum's
    true-up (``in_invoice_order`` moves it after the invoice items). In a trial, the base fee
    and usage lines at zero, kind ``trial``, and no commitment.

    ``tallies``: meter id -> tally of the period, for meters without ``group_by``. ``grouped``,
    when given, replaces it: meter id -> group key -> tally (``usage_lines`` describes the
    keys). ``fees``: the percentage fees by the same keys (a meter without ``group_by`` has the
    key ``()``)."""
    usage: usage_lines.GroupedTallies = (
        grouped if grouped is not None else {meter_id: {(): t} for meter_id, t in tallies.items()}
    )
    in_trial = schedule.in_trial(sub, period)
    rated = usage_lines.usage_lines(plan, meters, period, sub.timezone, usage, fees or {}, trial=in_trial)
    if in_trial:
        return _of_plan(plan, [_trial_base_line(plan, period, sub), *rated])
    lines = []
    if plan.base_fee:
        lines += [_base_fee_line(plan, seats, sub.timezone) for seats in schedule.seats_in(sub, period)]
    lines += rated
    lines += _true_up_lines(plan, period, sub.timezone, lines)
    return _of_plan(plan, lines)


def usage_so_far(
    plan: Plan,
    meters: Mapping[str, Meter],
    period: periods.Period,
    timezone: str,
    tallies: Mapping[str, Tally],
    *,
    dated: periods.Period,
    grouped: usage_lines.GroupedTallies | None = None,
    fees: usage_lines.GroupedFees | None = None,
) -> list[LineDraft]:
    """A threshold invoice's usage lines: the period's prices on its quantities so far, capped but
    never floored, dated ``dated`` (from the period's start to the invoice)."""
    usage: usage_lines.GroupedTallies = (
        grouped if grouped is not None else {meter_id: {(): t} for meter_id, t in tallies.items()}
    )
    rated = usage_lines.usage_lines(
        plan, meters, period, timezone, usage, fees or {}, floors=False, dated=dated
    )
    return _of_plan(plan, rated)


def already_billed_line(plan: Plan, billed: int, span: periods.Period) -> LineDraft:
    """Minus what the period's threshold invoices billed for its usage so far."""
    return LineDraft(
        kind=ALREADY_BILLED,
        meter_id=None,
        description="Already billed on threshold invoices this period",
        quantity=Decimal(1),
        amount=-billed,
        period_start=span.start,
        period_end=span.end,
        plan_id=plan.id,
    )


def in_invoice_order(drafted: Sequence[LineDraft], period_start: datetime) -> list[LineDraft]:
    """The lines in the order of API.md's invoice computation: as built, except that the
    invoice items come after every subscription line, then the true-up of the invoice's own
    period (a ``minimum_commitment`` line of that period; the nettings after late lines are of
    earlier periods and stay after their late line), then ``already_billed``."""

    def rank(line: LineDraft) -> int:
        if line.kind == commitments.MINIMUM_COMMITMENT and line.period_start == period_start:
            return 2
        return _RANKS.get(line.kind, 0)

    return sorted(drafted, key=rank)


ALREADY_BILLED = "already_billed"
_RANKS = {"invoice_item": 1, ALREADY_BILLED: 3}


def _true_up_lines(
    plan: Plan, period: periods.Period, timezone: str, lines: list[LineDraft]
) -> list[LineDraft]:
    floor = commitments.prorated(plan.minimum_amount, period, timezone)
    counted = sum(line.amount for line in lines if line.kind in commitments.COUNTED_KINDS)
    amount = commitments.true_up(floor, counted)
    if amount == 0:
        return []
    share = periods.covered_share(period, timezone)
    return [_commitment_line(plan, period, amount, f"{plan.name} minimum commitment{_prorated_note(share)}")]


def _commitment_line(plan: Plan, period: periods.Period, amount: int, description: str) -> LineDraft:
    return LineDraft(
        kind=commitments.MINIMUM_COMMITMENT,
        meter_id=None,
        description=description,
        quantity=Decimal(1),
        amount=amount,
        period_start=period.start,
        period_end=period.end,
    )


def _of_plan(plan: Plan, lines: list[LineDraft]) -> list[LineDraft]:
    for line in lines:
        line.plan_id = plan.id
    return lines


def _trial_base_line(plan: Plan, period: periods.Period, sub: Subscription) -> LineDraft:
    """Usage is recorded and shown in a trial, never billed: every line is at zero."""
    return LineDraft(
        kind="trial",
        meter_id=None,
        description=f"{plan.name} (trial)",
        quantity=Decimal(schedule.quantity_at(sub, period.start)),
        amount=0,
        period_start=period.start,
        period_end=period.end,
    )


def late_lines(
    plan: Plan, meters: Mapping[str, Meter], sub: Subscription, late: Sequence[LatePeriod]
) -> list[LineDraft]:
    """Per late period and price: the late line, its price's floor or cap adjustment, and the
    netting of the plan minimum's true-up (see commitments). Late usage of a trial period is
    shown at zero: trial usage is never billed, and no commitment applies."""
    lines = []
    for item in late:
        if schedule.in_trial(sub, item.period):
            lines += _late_trial_lines(plan, meters, sub.timezone, item)
        else:
            lines += _late_period_lines(plan, meters, sub.timezone, item)
    return _of_plan(plan, lines)


def _late_period_lines(
    plan: Plan, meters: Mapping[str, Meter], timezone: str, item: LatePeriod
) -> list[LineDraft]:
    floor = commitments.prorated(plan.minimum_amount, item.period, timezone)
    counted, commitment = item.counted, item.commitment
    lines = []
    for index, (stored, price) in enumerate(prices_of(plan)):
        meter = meters[stored["meter_id"]]
        billed = item.billed.get(meter.id, Decimal(0))
        now = usage_lines.quantity(item.tallies.get(meter.id), meter.aggregation)
        if now == billed:
            continue
        before, after = _late_charges(plan, meter, price, item, billed, now)
        late = _late_line(meter, timezone, item.period, money.exact_add(now, -billed), after - before)
        late.price_index = index
        lines.append(late)
        bounds = commitments.price_bounds(stored, item.period, timezone)
        adjustment = commitments.late_bound_adjustment(
            after, item.billed_amounts.get(meter.id, 0), after - before, bounds
        )
        kind = commitments.late_bound_kind(before, after, bounds)
        lines += usage_lines.bound_lines(meter, item.period, adjustment, kind=kind, price_index=index)
        counted += after - before + adjustment
        netting = 0 if floor is None else commitments.commitment_netting(floor, counted, commitment)
        if netting:
            commitment += netting
            description = (
                f"{plan.name} minimum commitment, after late usage for {_dates(item.period, timezone)}"
            )
            lines.append(_commitment_line(plan, item.period, netting, description))
    return lines


def _late_charges(
    plan: Plan, meter: Meter, price: Rate, item: LatePeriod, billed: Decimal, now: Decimal
) -> tuple[int, int]:
    """The price's charge of what was billed, and of the period's usage now."""
    if isinstance(price, percentage.PercentagePrice):
        empty = percentage.FeeTally()
        before = item.billed_fees.get(meter.id, empty).amount(price.free_units)
        return before, item.fees.get(meter.id, empty).amount(price.free_units)
    before_charge = pricing.charge(price, billed, plan.currency)
    return before_charge.amount, pricing.charge(price, now, plan.currency).amount


def _late_trial_lines(
    plan: Plan, meters: Mapping[str, Meter], timezone: str, item: LatePeriod
) -> list[LineDraft]:
    lines = []
    for stored, _ in prices_of(plan):
        meter = meters[stored["meter_id"]]
        billed = item.billed.get(meter.id, Decimal(0))
        now = usage_lines.quantity(item.tallies.get(meter.id), meter.aggregation)
        if now != billed:
            line = _late_line(meter, timezone, item.period, money.exact_add(now, -billed), 0)
            line.description += " (trial)"
            lines.append(line)
    return lines


def _late_line(meter: Meter, timezone: str, period: periods.Period, added: Decimal, amount: int) -> LineDraft:
    return LineDraft(
        kind="late_usage",
        meter_id=meter.id,
        description=f"{usage_lines.meter_label(meter)}, late usage for {_dates(period, timezone)}",
        quantity=added,
        amount=amount,
        period_start=period.start,
        period_end=period.end,
    )


def _base_fee_line(plan: Plan, seats: schedule.Seats, timezone: str) -> LineDraft:
    share = periods.covered_share(seats.period, timezone)
    description = f"{plan.name} base fee"
    if seats.quantity != 1:
        description += f" x {seats.quantity}"
    description += _prorated_note(share)
    return LineDraft(
        kind="base_fee",
        meter_id=None,
        description=description,
        quantity=Decimal(seats.quantity),
        amount=periods.prorated_fee(plan.base_fee * seats.quantity, seats.period, timezone),
        period_start=seats.period.start,
        period_end=seats.period.end,
    )


def _prorated_note(share: Fraction) -> str:
    if share == 1:
        return ""
    percent = money.round_half_up(Decimal(share.numerator * 100) / Decimal(share.denominator), 2)
    return f" (prorated: {money.format_decimal(percent)}% of the month)"


def _dates(period: periods.Period, timezone: str) -> str:
    zone = ZoneInfo(timezone)
    start = period.start.astimezone(zone)
    end = period.end.astimezone(zone)
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} {timezone}"
