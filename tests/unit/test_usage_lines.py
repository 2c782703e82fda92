"""Usage lines per price and group from grouped tallies: each group to its winning price, one
line per projected value combination in order (null last), tiers and floors per line and price,
each meter's unpriced line, percentage lines from their fees. Expected amounts are Decimal
arithmetic written here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import count
from types import SimpleNamespace
from typing import Any

from billing.invoicing.line_draft import LineDraft
from billing.invoicing.models import Plan
from billing.invoicing.percentage import FeeTally
from billing.invoicing.periods import Period
from billing.invoicing.usage_lines import usage_lines
from billing.metering.rollups import Partial
from billing.metering.usage import Tally

D = Decimal
SEPT = Period(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))
_ids = count()


def half_up(x: Decimal) -> int:
    return int(x.quantize(D(1), rounding=ROUND_HALF_UP))


def tally(events: int, total: str, uniques: tuple[str, ...] = ()) -> Tally:
    at = datetime(2026, 9, 2, tzinfo=UTC)
    return Tally(Partial(events, D(total), D(total), D(total), at, 1), set(uniques))


def meter(key: str, group_by: list[str], aggregation: str = "sum", unit: str | None = None) -> Any:
    return SimpleNamespace(
        id=f"mtr_{key}", key=key, name=key.title(), unit=unit, aggregation=aggregation, group_by=group_by
    )


def plan(*prices: dict, currency: str = "USD") -> Plan:
    now = datetime(2026, 9, 1, tzinfo=UTC)
    stored = [{"meter_id": f"mtr_{p['meter']}", **p} for p in prices]
    return Plan(
        id=f"plan_{next(_ids)}",
        code="p",
        name="P",
        currency=currency,
        base_fee=0,
        prices=stored,
        created_at=now,
        updated_at=now,
    )


def rate(
    p: Plan, meters: list[Any], tallies: dict, fees: dict | None = None, trial: bool = False
) -> list[LineDraft]:
    return usage_lines(p, {m.id: m for m in meters}, SEPT, "UTC", tallies, fees or {}, trial=trial)


def shape(lines: list[LineDraft]) -> list[tuple[str, int | None, dict | None, str, Decimal, int]]:
    return [(x.kind, x.price_index, x.group, x.description, x.quantity, x.amount) for x in lines]


def test_a_grouped_price_has_a_line_per_projected_group_sorted_with_null_last() -> None:
    calls = meter("calls", ["region", "model"])
    p = plan({"meter": "calls", "model": "per_unit", "unit_amount": "0.5", "group_by": ["region"]})
    tallies = {
        calls.id: {
            ("us", "x"): tally(1, "10"),
            ("eu", "x"): tally(2, "3"),
            (None, "y"): tally(1, "1"),
            '["eu","y"]': tally(3, "4"),  # the JSON text of a key is read as its tuple
        }
    }
    assert shape(rate(p, [calls], tallies)) == [
        ("usage", 0, {"region": "eu"}, "Calls · region=eu", D(7), half_up(D(7) * D("0.5") * 100)),
        ("usage", 0, {"region": "us"}, "Calls · region=us", D(10), 500),
        ("usage", 0, {"region": None}, "Calls · region=null", D(1), 50),
    ]


def test_filtered_prices_win_over_the_unfiltered_one_and_tiers_apply_per_price() -> None:
    calls = meter("calls", ["region"])
    graduated = [
        {"up_to": "10", "unit_amount": "1", "flat_amount": 0},
        {"up_to": None, "unit_amount": "0.1", "flat_amount": 0},
    ]
    p = plan(
        {"meter": "calls", "model": "graduated", "tiers": graduated},
        {"meter": "calls", "model": "graduated", "tiers": graduated, "filters": {"region": ["eu", "uk"]}},
    )
    tallies = {
        calls.id: {
            ("eu",): tally(1, "8"),
            ("uk",): tally(1, "8"),
            ("us",): tally(1, "8"),
            (None,): tally(1, "4"),
        }
    }

    def graduated_amount(q: Decimal) -> int:
        return half_up((min(q, D(10)) * 1 + max(q - 10, D(0)) * D("0.1")) * 100)

    assert shape(rate(p, [calls], tallies)) == [
        ("usage", 0, None, "Calls", D(12), graduated_amount(D(12))),
        ("usage", 1, None, "Calls · region=eu|uk", D(16), graduated_amount(D(16))),
    ]


def test_events_no_price_matches_give_one_zero_line_per_meter_after_its_last_price() -> None:
    calls, users = meter("calls", ["region"]), meter("users", ["region"], aggregation="unique_count")
    p = plan(
        {"meter": "calls", "model": "per_unit", "unit_amount": "1", "filters": {"region": ["eu"]}},
        {"meter": "users", "model": "per_unit", "unit_amount": "2", "filters": {"region": ["eu"]}},
        {"meter": "calls", "model": "per_unit", "unit_amount": "3", "filters": {"region": ["us"]}},
    )
    tallies = {
        calls.id: {("eu",): tally(1, "2"), ("uk",): tally(2, "5"), (None,): tally(1, "1")},
        users.id: {
            ("eu",): tally(2, "0", ("u1", "u2")),
            ("uk",): tally(2, "0", ("u2", "u3")),
            ("fr",): tally(1, "0", ("u3",)),
        },
    }
    lines = rate(p, [calls, users], tallies)
    assert shape(lines) == [
        ("usage", 0, None, "Calls · region=eu", D(2), 200),
        ("usage", 1, None, "Users · region=eu", D(2), 400),
        ("usage", None, None, "Users · unpriced", D(2), 0),
        ("usage", 2, None, "Calls · region=us", D(0), 0),
        ("usage", None, None, "Calls · unpriced", D(6), 0),
    ]
    assert [x.unpriced_quantity for x in lines] == [None, None, D(2), None, D(6)]


def test_no_unpriced_line_when_every_event_is_priced_and_a_grouped_price_without_events_has_no_line() -> None:
    calls = meter("calls", ["region"])
    p = plan(
        {
            "meter": "calls",
            "model": "per_unit",
            "unit_amount": "1",
            "group_by": ["region"],
            "filters": {"region": ["eu"]},
        },
        {"meter": "calls", "model": "per_unit", "unit_amount": "1"},
    )
    assert shape(rate(p, [calls], {calls.id: {("us",): tally(1, "2")}})) == [
        ("usage", 1, None, "Calls", D(2), 200)
    ]


def test_groups_falling_on_one_line_merge_their_distinct_values() -> None:
    users = meter("users", ["region", "plan"], aggregation="unique_count")
    p = plan({"meter": "users", "model": "per_unit", "unit_amount": "1", "group_by": ["region"]})
    tallies = {users.id: {("eu", "a"): tally(2, "0", ("u1", "u2")), ("eu", "b"): tally(2, "0", ("u2", "u3"))}}
    assert shape(rate(p, [users], tallies)) == [
        ("usage", 0, {"region": "eu"}, "Users · region=eu", D(3), 300)
    ]


def test_a_price_cap_bounds_the_sum_of_its_group_lines_once() -> None:
    calls = meter("calls", ["region"])
    p = plan(
        {
            "meter": "calls",
            "model": "per_unit",
            "unit_amount": "1",
            "group_by": ["region"],
            "maximum_amount": 500,
        }
    )
    lines = rate(p, [calls], {calls.id: {("eu",): tally(1, "4"), ("us",): tally(1, "3")}})
    assert shape(lines) == [
        ("usage", 0, {"region": "eu"}, "Calls · region=eu", D(4), 400),
        ("usage", 0, {"region": "us"}, "Calls · region=us", D(3), 300),
        ("price_maximum", 0, None, "Calls, maximum spend", D(1), 500 - 700),
    ]
    assert sum(x.amount for x in lines) == 500


def test_a_percentage_price_bills_its_fees_per_group_with_free_events_per_line() -> None:
    payments = meter("payments", ["country"], unit="payment")
    p = plan(
        {
            "meter": "payments",
            "model": "percentage",
            "rate": "2.9",
            "fixed_amount_per_event": 30,
            "free_units": 1,
            "group_by": ["country"],
        }
    )

    def fee(value: str) -> Decimal:
        return D(value) * D("2.9") / 100 * 100 + 30

    # The first event of each line is free: de pays only its second (1.00 -> 32.9 cents).
    fees_de = FeeTally.of([(1, fee("0.01")), (3, fee("1.00"))])
    fees_fr = FeeTally.of([(2, fee("10"))])
    tallies = {payments.id: {("de",): tally(2, "1.01"), ("fr",): tally(1, "10")}}
    fees = {payments.id: {("de",): fees_de, ("fr",): fees_fr}}
    label = "Payments (payment) · 2.9% + 0.30 per payment"
    assert shape(rate(p, [payments], tallies, fees)) == [
        ("usage", 0, {"country": "de"}, f"{label} · country=de", D("1.01"), half_up(fee("1.00"))),
        ("usage", 0, {"country": "fr"}, f"{label} · country=fr", D(10), 0),
    ]
    # Without fees (not yet wired for this price), the line shows its quantity at 0.
    assert [x.amount for x in rate(p, [payments], tallies)] == [0, 0]


def test_in_a_trial_every_line_is_at_zero_with_no_floor() -> None:
    calls = meter("calls", ["region"])
    p = plan(
        {
            "meter": "calls",
            "model": "per_unit",
            "unit_amount": "1",
            "group_by": ["region"],
            "minimum_amount": 10_000,
            "filters": {"region": ["eu"]},
        }
    )
    lines = rate(p, [calls], {calls.id: {("eu",): tally(1, "4"), ("us",): tally(1, "3")}}, trial=True)
    assert shape(lines) == [
        ("trial", 0, {"region": "eu"}, "Calls · region=eu (trial)", D(4), 0),
        ("trial", None, None, "Calls · unpriced (trial)", D(3), 0),
    ]


def test_an_ungrouped_price_keeps_its_single_line_zero_included() -> None:
    calls = meter("calls", [])
    p = plan({"meter": "calls", "model": "per_unit", "unit_amount": "1", "minimum_amount": 900})
    assert shape(rate(p, [calls], {})) == [
        ("usage", 0, None, "Calls", D(0), 0),
        ("price_minimum", 0, None, "Calls, minimum spend", D(1), 900),
    ]
    assert shape(rate(p, [calls], {calls.id: {"": tally(2, "5")}}))[0] == (
        "usage",
        0,
        None,
        "Calls",
        D(5),
        500,
    )
