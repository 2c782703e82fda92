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
from billing.invoicing import periods, pricing
from billing.invoicing.models import Plan
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
    timezone: str,
    tallies: Mapping[str, Tally],
) -> list[LineDraft]:
    """The base fee (prorated) and one usage line per priced meter, zero quantities included."""
    lines = []
    if plan.base_fee:
        lines.append(_base_fee_line(plan, period, timezone))
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
    return lines


def late_lines(
    plan: Plan, meters: Mapping[str, Meter], timezone: str, late: Sequence[LatePeriod]
) -> list[LineDraft]:
    lines = []
    for item in late:
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
                    description=f"{_meter_label(meter)}, late usage for {_dates(item.period, timezone)}",
                    quantity=money.exact_add(now, -billed),
                    amount=pricing.marginal_amount(price, billed, now, plan.currency),
                    period_start=item.period.start,
                    period_end=item.period.end,
                )
            )
    return lines


def _base_fee_line(plan: Plan, period: periods.Period, timezone: str) -> LineDraft:
    share = periods.covered_share(period, timezone)
    description = f"{plan.name} base fee"
    if share != 1:
        percent = money.round_half_up(Decimal(share.numerator * 100) / Decimal(share.denominator), 2)
        description += f" (prorated: {money.format_decimal(percent)}% of the month)"
    return LineDraft(
        kind="base_fee",
        meter_id=None,
        description=description,
        quantity=Decimal(1),
        amount=periods.prorated_fee(plan.base_fee, period, timezone),
        period_start=period.start,
        period_end=period.end,
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
