"""An invoice's lines from a plan and usage tallies: base fee, usage, and late usage.

Each line's amount is rounded once (in pricing); totals are sums of rounded lines. A late
line prices what late events add to an already invoiced period under the same plan:
charge(billed + late) - charge(billed), so tiers stay right across all of that period's lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from billing.core import money
from billing.invoicing import periods, pricing, schedule
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
    quantities included; in a trial, the same lines at zero, kind ``trial``."""
    if schedule.in_trial(sub, period):
        return _of_plan(plan, _trial_lines(plan, meters, period, sub, tallies))
    lines = []
    if plan.base_fee:
        lines += [_base_fee_line(plan, seats, sub.timezone) for seats in schedule.seats_in(sub, period)]
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
                period_start=period.start,
                period_end=period.end,
                tiers=_tiers(billed),
            )
        )
    return _of_plan(plan, lines)


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
    """Late usage of a trial period is shown at zero: trial usage is never billed."""
    timezone = sub.timezone
    lines = []
    for item in late:
        trial = schedule.in_trial(sub, item.period)
        for stored, price in prices_of(plan):
            meter = meters[stored["meter_id"]]
            billed = item.billed.get(meter.id, Decimal(0))
            now = quantity(item.tallies.get(meter.id), meter.aggregation)
            if now == billed:
                continue
            lines.append(
                LineDraft(
                    kind="late_usage",
                    meter_id=meter.id,
                    description=f"{_meter_label(meter)}, late usage for {_dates(item.period, timezone)}"
                    + (" (trial)" if trial else ""),
                    quantity=money.exact_add(now, -billed),
                    amount=0 if trial else pricing.marginal_amount(price, billed, now, plan.currency),
                    period_start=item.period.start,
                    period_end=item.period.end,
                )
            )
    return _of_plan(plan, lines)


def _base_fee_line(plan: Plan, seats: schedule.Seats, timezone: str) -> LineDraft:
    share = periods.covered_share(seats.period, timezone)
    description = f"{plan.name} base fee"
    if seats.quantity != 1:
        description += f" x {seats.quantity}"
    if share != 1:
        percent = money.round_half_up(Decimal(share.numerator * 100) / Decimal(share.denominator), 2)
        description += f" (prorated: {money.format_decimal(percent)}% of the month)"
    return LineDraft(
        kind="base_fee",
        meter_id=None,
        description=description,
        quantity=Decimal(seats.quantity),
        amount=periods.prorated_fee(plan.base_fee * seats.quantity, seats.period, timezone),
        period_start=seats.period.start,
        period_end=seats.period.end,
    )


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
