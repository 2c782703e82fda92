"""The usage lines a threshold invoice rates (``usage_lines.usage_lines``): capped, never floored,
bounded over the whole period though dated by the span so far, and the same usage lines as the
invoice that closes the period."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.invoicing import lines, periods, usage_lines
from billing.invoicing.models import Plan, Subscription
from billing.metering.models import Meter
from billing.metering.rollups import Partial
from billing.metering.usage import Tally

NOV = periods.Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
SO_FAR = periods.Period(NOV.start, datetime(2026, 11, 10, tzinfo=UTC))
METER = Meter(id="mtr_1", key="units", name="Units", aggregation="sum", unit=None)
PRICE = {"meter_id": "mtr_1", "meter": "units", "model": "per_unit", "unit_amount": "0.10"}


def plan(**bounds: int) -> Plan:
    # Its own id per bounds: prices_of parses a plan once per id and version.
    return Plan(
        id="plan_" + "_".join(f"{k}{v}" for k, v in sorted(bounds.items())),
        name="Prog",
        currency="USD",
        base_fee=500,
        prices=[PRICE | bounds],
        minimum_amount=10_000,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def tally(quantity: int) -> dict[str, Tally]:
    at = NOV.start
    partial = Partial(1, Decimal(quantity), Decimal(quantity), Decimal(quantity), at, 1)
    return {METER.id: Tally(partial)}


def rated(plan_: Plan, quantity: int, *, floors: bool) -> list[tuple[str, int]]:
    grouped = {meter_id: {(): t} for meter_id, t in tally(quantity).items()}
    drafted = usage_lines.usage_lines(
        plan_, {METER.id: METER}, NOV, "UTC", grouped, {}, floors=floors, dated=SO_FAR
    )
    assert all((d.period_start, d.period_end) == (SO_FAR.start, SO_FAR.end) for d in drafted)
    return [(d.kind, d.amount) for d in drafted]


def test_a_floor_waits_for_the_period_end_and_a_cap_applies_at_once() -> None:
    assert rated(plan(minimum_amount=3000), 100, floors=False) == [("usage", 1000)]
    assert rated(plan(minimum_amount=3000), 100, floors=True) == [("usage", 1000), ("price_minimum", 2000)]
    # The cap of the whole month, not of the ten days so far.
    assert rated(plan(maximum_amount=1500), 400, floors=False) == [("usage", 4000), ("price_maximum", -2500)]


@pytest.mark.parametrize("quantity", [0, 7, 250])
def test_the_usage_lines_are_those_of_the_period_end_invoice(quantity: int) -> None:
    sub = Subscription(id="sub_1", starts_at=NOV.start, timezone="UTC", quantities=[], trial_end=None)
    whole = lines.period_lines(plan(), {METER.id: METER}, NOV, sub, tally(quantity))
    usage = [(d.kind, d.amount) for d in whole if d.kind == "usage"]
    assert rated(plan(), quantity, floors=False) == usage == [("usage", quantity * 10)]


def test_the_already_billed_line_subtracts_and_counts_for_the_plan() -> None:
    line = lines.already_billed_line(plan(), 1234, SO_FAR)
    assert (line.kind, line.amount, line.plan_id, line.meter_id) == ("already_billed", -1234, "plan_", None)
    ordered = lines.in_invoice_order(
        [line, *lines.usage_so_far(plan(), {METER.id: METER}, NOV, "UTC", {}, dated=SO_FAR)], NOV.start
    )
    assert [d.kind for d in ordered] == ["usage", "already_billed"]
