"""The pure line logic of commitments: price floors and caps, the plan minimum, their late-usage
netting, and where their lines go. Expected amounts are computed here with Fraction, never by
billing.invoicing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.invoicing.commitments import Bounds, bound_adjustment, commitment_netting, true_up
from billing.invoicing.lines import Billed, LatePeriod, LineDraft, in_invoice_order, late_lines, period_lines
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.percentage import FeeTally
from billing.invoicing.periods import Period
from billing.metering.models import Meter
from billing.metering.rollups import Partial
from billing.metering.usage import Tally

SEPTEMBER = Period(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))
LATE_SEPTEMBER = Period(datetime(2026, 9, 16, 7, 30, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))
METERS = {
    "mtr_a": Meter(id="mtr_a", key="a", name="A", unit=None, aggregation="sum"),
    "mtr_b": Meter(id="mtr_b", key="b", name="B", unit=None, aggregation="sum"),
}
_versions = itertools.count()


def half_up(x: Fraction) -> int:
    sign = -1 if x < 0 else 1
    q, r = divmod(abs(x.numerator), x.denominator)
    return sign * (q + (2 * r >= x.denominator))


def share(period: Period) -> Fraction:
    seconds = int((period.end - period.start).total_seconds())
    return Fraction(seconds, 30 * 24 * 3600)  # September has 30 days


def per_unit(meter: str, unit: str, **bounds: int) -> dict[str, object]:
    return {"meter_id": meter, "meter": meter, "model": "per_unit", "unit_amount": unit, **bounds}


def make_plan(prices: list[dict[str, object]], *, minimum: int | None = None, base_fee: int = 0) -> Plan:
    version = datetime(2026, 1, 1, tzinfo=UTC).replace(microsecond=next(_versions) % 1_000_000)
    return Plan(
        id=f"plan_{version.microsecond}",
        name="Pro",
        currency="USD",
        base_fee=base_fee,
        prices=prices,
        minimum_amount=minimum,
        updated_at=version,
    )


def make_sub(period: Period, trial_end: datetime | None = None) -> Subscription:
    return Subscription(timezone="UTC", starts_at=period.start, trial_end=trial_end, quantities=[])


def tally(value: Decimal) -> Tally:
    return Tally(Partial(1, value, value, value, SEPTEMBER.start, 1))


def kinds(drafted: list[LineDraft]) -> list[tuple[str, str | None, int]]:
    return [(line.kind, line.meter_id, line.amount) for line in drafted]


# --- bounds ---------------------------------------------------------------------------------------


def test_bound_adjustment_tops_up_to_the_floor_and_cuts_to_the_cap() -> None:
    bounds = Bounds(minimum=500, maximum=1000)
    assert bound_adjustment(100, bounds) == 400
    assert bound_adjustment(500, bounds) == 0
    assert bound_adjustment(1000, bounds) == 0
    assert bound_adjustment(1001, bounds) == -1
    assert bound_adjustment(100, bounds, floors=False) == 0  # a mid-period invoice
    assert bound_adjustment(1500, bounds, floors=False) == -500
    assert bound_adjustment(7, Bounds()) == 0


def test_the_plan_minimum_true_up_and_its_netting() -> None:
    assert true_up(None, 0) == 0
    assert true_up(5000, 1200) == 3800
    assert true_up(5000, 6000) == 0
    # Billed 3800 of true-up; a late line of 1000 leaves 2800: netting -1000.
    assert commitment_netting(5000, 2200, 3800) == -1000
    # A late line of 9000 takes all of it back, never more.
    assert commitment_netting(5000, 10200, 3800) == -3800


# --- lines of a closing period --------------------------------------------------------------------


def test_each_price_is_followed_by_its_floor_or_cap_line_then_the_true_up() -> None:
    plan = make_plan(
        [
            per_unit("mtr_a", "0.01", minimum_amount=500, maximum_amount=1000),
            per_unit("mtr_b", "0.01", maximum_amount=300),
        ],
        minimum=5000,
        base_fee=1000,
    )
    tallies = {"mtr_a": tally(Decimal(100)), "mtr_b": tally(Decimal(2000))}
    drafted = period_lines(plan, METERS, SEPTEMBER, make_sub(SEPTEMBER), tallies)
    assert kinds(drafted) == [
        ("base_fee", None, 1000),
        ("usage", "mtr_a", 100),
        ("price_minimum", "mtr_a", 400),
        ("usage", "mtr_b", 2000),
        ("price_maximum", "mtr_b", -1700),
        # counted: 1000 + 100 + 400 + 2000 - 1700 = 1800, bounds included
        ("minimum_commitment", None, 5000 - 1800),
    ]
    assert {line.plan_id for line in drafted} == {plan.id}
    assert all((line.period_start, line.period_end) == (SEPTEMBER.start, SEPTEMBER.end) for line in drafted)


def test_a_partial_period_prorates_every_bound_once() -> None:
    plan = make_plan([per_unit("mtr_a", "0.01", minimum_amount=333, maximum_amount=777)], minimum=1001)
    sub = make_sub(LATE_SEPTEMBER)
    floor, cap, minimum = (half_up(Fraction(x) * share(LATE_SEPTEMBER)) for x in (333, 777, 1001))
    low = period_lines(plan, METERS, LATE_SEPTEMBER, sub, {"mtr_a": tally(Decimal(1))})
    assert kinds(low) == [
        ("usage", "mtr_a", 1),
        ("price_minimum", "mtr_a", floor - 1),
        ("minimum_commitment", None, minimum - floor),
    ]
    assert "prorated" in low[-1].description
    high = period_lines(plan, METERS, LATE_SEPTEMBER, sub, {"mtr_a": tally(Decimal(100000))})
    # The cap holds the price down; the plan minimum then tops the period up (it counts the cap).
    assert kinds(high) == [
        ("usage", "mtr_a", 100000),
        ("price_maximum", "mtr_a", cap - 100000),
        ("minimum_commitment", None, minimum - cap),
    ]


def test_a_trial_period_has_no_commitment() -> None:
    plan = make_plan([per_unit("mtr_a", "0.01", minimum_amount=500)], minimum=5000)
    drafted = period_lines(plan, METERS, SEPTEMBER, make_sub(SEPTEMBER, SEPTEMBER.end), {})
    assert {line.kind for line in drafted} == {"trial"}
    assert sum(line.amount for line in drafted) == 0


def test_the_true_up_follows_the_invoice_items_and_nettings_stay_after_their_late_line() -> None:
    def line(kind: str, period: Period, amount: int) -> LineDraft:
        return LineDraft(kind, None, kind, Decimal(1), amount, period.start, period.end)

    august = Period(datetime(2026, 8, 1, tzinfo=UTC), SEPTEMBER.start)
    drafted = [
        line("usage", SEPTEMBER, 1),
        line("minimum_commitment", SEPTEMBER, 99),
        line("late_usage", august, 10),
        line("minimum_commitment", august, -10),
        line("invoice_item", SEPTEMBER, 5),
        line("invoice_item", SEPTEMBER, 6),
    ]
    ordered = in_invoice_order(drafted, SEPTEMBER.start)
    assert [(x.kind, x.amount) for x in ordered] == [
        ("usage", 1),
        ("late_usage", 10),
        ("minimum_commitment", -10),
        ("invoice_item", 5),
        ("invoice_item", 6),
        ("minimum_commitment", 99),
    ]


# --- late usage: the bounds hold over every invoice of the period ----------------------------------


LINE = (0, ())  # the one price's one line


def billed_state(
    period: Period, drafted: list[LineDraft], quantity: Decimal, state: LatePeriod | None
) -> LatePeriod:
    """What the finalized invoices of the period hold after ``drafted`` (as late.py reads it)."""
    amounts = dict(state.billed_amounts) if state else {}
    counted = state.counted if state else 0
    commitment = state.commitment if state else 0
    charged = state.billed[LINE].amount if state else 0
    for line in drafted:
        if line.kind == "minimum_commitment":
            commitment += line.amount
            continue
        counted += line.amount
        if line.meter_id:
            amounts[0] = amounts.get(0, 0) + line.amount
        if line.kind in ("usage", "late_usage"):
            charged += line.amount
    return LatePeriod(period, {}, {LINE: Billed(quantity, charged)}, amounts, counted, commitment)


def charge(quantity: int, unit: Fraction) -> int:
    return half_up(quantity * unit * 100)


@settings(max_examples=300, deadline=None)
@given(
    quantities=st.lists(st.integers(0, 5000), min_size=2, max_size=5),
    floor=st.one_of(st.none(), st.integers(0, 3000)),
    cap_above_floor=st.one_of(st.none(), st.integers(0, 3000)),
    minimum=st.one_of(st.none(), st.integers(0, 6000)),
    base_fee=st.integers(0, 1000),
    partial=st.booleans(),
)
def test_every_round_of_late_usage_keeps_the_bounds_over_all_lines_of_the_period(
    quantities: list[int],
    floor: int | None,
    cap_above_floor: int | None,
    minimum: int | None,
    base_fee: int,
    partial: bool,
) -> None:
    """Quantities as the period's usage is first billed and then changed by late rounds (down
    too, as a ``latest`` meter may): after each round, the price's lines sum to its bounded charge,
    and the plan minimum's lines to what keeps the period at its floor."""
    period = LATE_SEPTEMBER if partial else SEPTEMBER
    cap = None if cap_above_floor is None else (floor or 0) + cap_above_floor
    bounds = {
        name: value
        for name, value in (("minimum_amount", floor), ("maximum_amount", cap))
        if value is not None
    }
    plan = make_plan([per_unit("mtr_a", "0.0137", **bounds)], minimum=minimum, base_fee=base_fee)
    sub = make_sub(period)
    unit, s = Fraction("0.0137"), share(period)
    low = None if floor is None else half_up(floor * s)
    high = None if cap is None else half_up(cap * s)
    plan_floor = None if minimum is None else half_up(minimum * s)
    fee = half_up(base_fee * s)

    state = None
    all_lines: list[LineDraft] = []
    for round_, quantity in enumerate(quantities):
        q = Decimal(quantity)
        if round_ == 0:
            drafted = period_lines(plan, METERS, period, sub, {"mtr_a": tally(q)})
        else:
            assert state is not None
            late = LatePeriod(
                period,
                {LINE: (tally(q), FeeTally())},
                state.billed,
                state.billed_amounts,
                state.counted,
                state.commitment,
            )
            drafted = late_lines(plan, METERS, sub, [late])
        all_lines += drafted
        state = billed_state(period, drafted, q, state)

        expected = charge(quantity, unit)
        if high is not None:
            expected = min(expected, high)
        if low is not None:
            expected = max(expected, low)
        assert sum(x.amount for x in all_lines if x.meter_id == "mtr_a") == expected
        counted = fee + expected
        owed = 0 if plan_floor is None else max(plan_floor - counted, 0)
        assert sum(x.amount for x in all_lines if x.kind == "minimum_commitment") == owed
        assert all(x.amount != 0 for x in all_lines if x.kind not in ("usage", "base_fee", "late_usage"))
    assert all(x.plan_id == plan.id for x in all_lines)
