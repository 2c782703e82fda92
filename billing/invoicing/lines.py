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
from billing.invoicing import commitments, percentage, periods, price_match, schedule, usage_lines
from billing.invoicing.line_draft import LineDraft as LineDraft
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import prices_of
from billing.invoicing.usage_lines import LineKey
from billing.metering.models import Meter
from billing.metering.usage import Tally


@dataclass(frozen=True)
class Billed:
    """What finalized invoices billed for one line of a period (its usage, trial and late lines)."""

    quantity: Decimal = Decimal(0)
    amount: int = 0


@dataclass(frozen=True)
class LatePeriod:
    """A period already invoiced, its usage now, and what its invoices billed so far, per line
    (``usage_lines.LineKey``: the price's index and the line's group values)."""

    period: periods.Period
    now: Mapping[LineKey, tuple[Tally, percentage.FeeTally]]  # every event of the period
    billed: Mapping[LineKey, Billed]
    # price index -> what its lines (usage, late usage, floor and cap) billed for the period
    billed_amounts: Mapping[int, int] = field(default_factory=dict)
    counted: int = 0  # what billed lines count toward the plan minimum (commitments.COUNTED_KINDS)
    commitment: int = 0  # the minimum_commitment lines billed for the period


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
    usage = _grouped(tallies, grouped)
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
    usage = _grouped(tallies, grouped)
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


def _grouped(
    tallies: Mapping[str, Tally], grouped: usage_lines.GroupedTallies | None
) -> usage_lines.GroupedTallies:
    """The usage lines' input: ``grouped`` when given, else each meter's tally as its one group."""
    return grouped if grouped is not None else {meter_id: {(): t} for meter_id, t in tallies.items()}


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
    for index, (stored, _) in enumerate(prices_of(plan)):
        meter = meters[stored["meter_id"]]
        after = late = 0  # the price's charge now over all its lines, and what its late lines add
        added = []
        for now, billed in _price_lines(plan, meter, item, index):
            after += now.amount
            if (now.quantity, now.amount) != (billed.quantity, billed.amount):
                late += now.amount - billed.amount
                added.append(_late_of(now, billed, timezone, item.period))
        if not added:
            continue
        lines += added
        bounds = commitments.price_bounds(stored, item.period, timezone)
        adjustment = commitments.late_bound_adjustment(after, item.billed_amounts.get(index, 0), late, bounds)
        kind = commitments.late_bound_kind(after - late, after, bounds)
        lines += usage_lines.bound_lines(meter, item.period, adjustment, kind=kind, price_index=index)
        counted += late + adjustment
        netting = 0 if floor is None else commitments.commitment_netting(floor, counted, commitment)
        if netting:
            commitment += netting
            description = (
                f"{plan.name} minimum commitment, after late usage for {_dates(item.period, timezone)}"
            )
            lines.append(_commitment_line(plan, item.period, netting, description))
    return lines


def _price_lines(plan: Plan, meter: Meter, item: LatePeriod, index: int) -> list[tuple[LineDraft, Billed]]:
    """Each line of the price in the period, now (rated on every event of the period, which the
    line's billed amount, a charge of the quantity billed, is subtracted from: tiers never
    restart) and as billed; a line with events or billed before, in order of its group values."""
    values = {v for i, v in (*item.now, *item.billed) if i == index}
    return [
        (
            usage_lines.rated_line(plan, meter, item.period, index, v, item.now.get((index, v))),
            item.billed.get((index, v), Billed()),
        )
        for v in sorted(values, key=price_match.sort_key)
    ]


def _late_of(now: LineDraft, billed: Billed, timezone: str, period: periods.Period) -> LineDraft:
    return LineDraft(
        kind="late_usage",
        meter_id=now.meter_id,
        description=f"{now.description}, late usage for {_dates(period, timezone)}",
        quantity=money.exact_add(now.quantity, -billed.quantity),
        amount=now.amount - billed.amount,
        period_start=period.start,
        period_end=period.end,
        price_index=now.price_index,
        group=now.group,
    )


def _late_trial_lines(
    plan: Plan, meters: Mapping[str, Meter], timezone: str, item: LatePeriod
) -> list[LineDraft]:
    lines = []
    for index, (stored, _) in enumerate(prices_of(plan)):
        for now, billed in _price_lines(plan, meters[stored["meter_id"]], item, index):
            if now.quantity != billed.quantity:
                line = _late_of(now, Billed(billed.quantity, now.amount), timezone, item.period)
                line.description += " (trial)"
                lines.append(line)
    return lines


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
