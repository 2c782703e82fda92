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
from typing import Any
from zoneinfo import ZoneInfo

from billing.core import money
from billing.invoicing import commitments, periods, pricing, schedule
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import prices_of
from billing.metering.models import Meter
from billing.metering.usage import Tally


@dataclass
class LineDraft:
    kind: str
    meter_id: str | None
    description: str
    quantity: Decimal
    amount: int
    period_start: datetime
    period_end: datetime
    tiers: list[dict[str, Any]] = field(default_factory=list)
    invoice_item_id: str | None = None
    # The plan the line was rated under (a plan-scoped discount covers only its lines).
    plan_id: str | None = None
    # Set by amounts.compute: [{"discount", "amount"}] and [{"tax_rate", "amount", ...}].
    discount_amounts: list[dict[str, object]] = field(default_factory=list)
    tax_amounts: list[dict[str, object]] = field(default_factory=list)
    discount_id: str | None = None


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


def quantity(tally: Tally | None, aggregation: str) -> Decimal:
    value = tally.value(aggregation) if tally is not None else None
    return Decimal(0) if value is None else value


def period_lines(
    plan: Plan,
    meters: Mapping[str, Meter],
    period: periods.Period,
    sub: Subscription,
    tallies: Mapping[str, Tally],
) -> list[LineDraft]:
    """The base fee (prorated, per seat segment) and one usage line per priced meter, zero
    quantities included, each followed by its floor or cap line; then the plan minimum's
    true-up (``in_invoice_order`` moves it after the invoice items). In a trial, the base fee
    and usage lines at zero, kind ``trial``, and no commitment."""
    if schedule.in_trial(sub, period):
        return _of_plan(plan, _trial_lines(plan, meters, period, sub, tallies))
    lines = []
    if plan.base_fee:
        lines += [_base_fee_line(plan, seats, sub.timezone) for seats in schedule.seats_in(sub, period)]
    lines += usage_lines(plan, meters, period, sub.timezone, tallies)
    lines += _true_up_lines(plan, period, sub.timezone, lines)
    return _of_plan(plan, lines)


def usage_lines(
    plan: Plan,
    meters: Mapping[str, Meter],
    period: periods.Period,
    timezone: str,
    tallies: Mapping[str, Tally],
    *,
    floors: bool = True,
    dated: periods.Period | None = None,
) -> list[LineDraft]:
    """One usage line per priced meter (zero quantities included), each followed by its floor or
    cap line; bounds are those of ``period``. ``floors=False``: caps only (a threshold invoice).
    ``dated``: the span the lines show, when it is not the period (a threshold invoice's so far)."""
    span = dated or period
    lines = []
    for stored, price in prices_of(plan):
        meter = meters[stored["meter_id"]]
        billed = pricing.charge(price, quantity(tallies.get(meter.id), meter.aggregation), plan.currency)
        lines.append(
            LineDraft(
                kind="usage",
                meter_id=meter.id,
                description=_meter_label(meter),
                quantity=billed.quantity,
                amount=billed.amount,
                period_start=span.start,
                period_end=span.end,
                tiers=_tiers(billed),
            )
        )
        bounds = commitments.price_bounds(stored, period, timezone)
        adjustment = commitments.bound_adjustment(billed.amount, bounds, floors=floors)
        lines += _bound_lines(meter, span, adjustment)
    return _of_plan(plan, lines)


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


def _bound_lines(
    meter: Meter, period: periods.Period, adjustment: int, *, kind: str | None = None
) -> list[LineDraft]:
    if adjustment == 0:
        return []
    kind = kind or commitments.bound_kind(adjustment)
    label = "minimum spend" if kind == commitments.PRICE_MINIMUM else "maximum spend"
    return [
        LineDraft(
            kind=kind,
            meter_id=meter.id,
            description=f"{_meter_label(meter)}, {label}",
            quantity=Decimal(1),
            amount=adjustment,
            period_start=period.start,
            period_end=period.end,
        )
    ]


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


def _trial_lines(
    plan: Plan,
    meters: Mapping[str, Meter],
    period: periods.Period,
    sub: Subscription,
    tallies: Mapping[str, Tally],
) -> list[LineDraft]:
    """Usage is recorded and shown in a trial, never billed: every line is at zero."""
    base = LineDraft(
        kind="trial",
        meter_id=None,
        description=f"{plan.name} (trial)",
        quantity=Decimal(schedule.quantity_at(sub, period.start)),
        amount=0,
        period_start=period.start,
        period_end=period.end,
    )
    usage = [
        LineDraft(
            kind="trial",
            meter_id=meter.id,
            description=f"{_meter_label(meter)} (trial)",
            quantity=quantity(tallies.get(meter.id), meter.aggregation),
            amount=0,
            period_start=period.start,
            period_end=period.end,
        )
        for meter in (meters[stored["meter_id"]] for stored, _ in prices_of(plan))
    ]
    return [base, *usage]


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
    for stored, price in prices_of(plan):
        meter = meters[stored["meter_id"]]
        billed = item.billed.get(meter.id, Decimal(0))
        now = quantity(item.tallies.get(meter.id), meter.aggregation)
        if now == billed:
            continue
        before = pricing.charge(price, billed, plan.currency).amount
        after = pricing.charge(price, now, plan.currency).amount
        lines.append(_late_line(meter, timezone, item.period, money.exact_add(now, -billed), after - before))
        bounds = commitments.price_bounds(stored, item.period, timezone)
        adjustment = commitments.late_bound_adjustment(
            after, item.billed_amounts.get(meter.id, 0), after - before, bounds
        )
        kind = commitments.late_bound_kind(before, after, bounds)
        lines += _bound_lines(meter, item.period, adjustment, kind=kind)
        counted += after - before + adjustment
        netting = 0 if floor is None else commitments.commitment_netting(floor, counted, commitment)
        if netting:
            commitment += netting
            description = (
                f"{plan.name} minimum commitment, after late usage for {_dates(item.period, timezone)}"
            )
            lines.append(_commitment_line(plan, item.period, netting, description))
    return lines


def _late_trial_lines(
    plan: Plan, meters: Mapping[str, Meter], timezone: str, item: LatePeriod
) -> list[LineDraft]:
    lines = []
    for stored, _ in prices_of(plan):
        meter = meters[stored["meter_id"]]
        billed = item.billed.get(meter.id, Decimal(0))
        now = quantity(item.tallies.get(meter.id), meter.aggregation)
        if now != billed:
            line = _late_line(meter, timezone, item.period, money.exact_add(now, -billed), 0)
            line.description += " (trial)"
            lines.append(line)
    return lines


def _late_line(meter: Meter, timezone: str, period: periods.Period, added: Decimal, amount: int) -> LineDraft:
    return LineDraft(
        kind="late_usage",
        meter_id=meter.id,
        description=f"{_meter_label(meter)}, late usage for {_dates(period, timezone)}",
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


def _meter_label(meter: Meter) -> str:
    return f"{meter.name} ({meter.unit})" if meter.unit else meter.name


def _dates(period: periods.Period, timezone: str) -> str:
    zone = ZoneInfo(timezone)
    start = period.start.astimezone(zone)
    end = period.end.astimezone(zone)
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} {timezone}"


def _tiers(billed: pricing.Charge) -> list[dict[str, Any]]:
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
