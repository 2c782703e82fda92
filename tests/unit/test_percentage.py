"""The percentage model's fee per event, free events and the one rounding per line, against an
oracle in fractions written here (it asks nothing of billing.core.money)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core.money import InvalidDecimal
from billing.invoicing.percentage import FeeTally, PercentagePrice, fee, label, line_amount, parse_rate

D = Decimal
EXPONENTS = {"JPY": 0, "USD": 2, "KWD": 3}


def oracle_fee(value: Decimal, price: PercentagePrice, currency: str) -> Fraction:
    exact = Fraction(value) * Fraction(price.rate) / 100 * 10 ** EXPONENTS[currency]
    exact += price.fixed_amount_per_event
    if price.minimum_per_event is not None:
        exact = max(exact, Fraction(price.minimum_per_event))
    if price.maximum_per_event is not None:
        exact = min(exact, Fraction(price.maximum_per_event))
    return exact


def half_up(exact: Fraction) -> int:
    """Halves away from zero."""
    magnitude = math.floor(abs(exact) + Fraction(1, 2))
    return magnitude if exact >= 0 else -magnitude


def oracle_amount(values: list[Decimal], price: PercentagePrice, currency: str) -> int:
    fees = [oracle_fee(v, price, currency) for v in values]
    return half_up(sum(fees[price.free_units or 0 :], Fraction(0)))


rates = st.decimals(min_value=0, max_value=100, places=4)
values = st.decimals(min_value=-(10**9), max_value=10**12, places=12)
amounts = st.integers(min_value=0, max_value=10**6)


@st.composite
def percentage_prices(draw: st.DrawFn) -> PercentagePrice:
    low, high = draw(st.one_of(st.none(), amounts)), draw(st.one_of(st.none(), amounts))
    if low is not None and high is not None and low > high:
        low, high = high, low
    return PercentagePrice(
        rate=draw(rates),
        fixed_amount_per_event=draw(amounts),
        free_units=draw(st.one_of(st.none(), st.integers(0, 5))),
        minimum_per_event=low,
        maximum_per_event=high,
    )


@given(values, percentage_prices(), st.sampled_from(sorted(EXPONENTS)))
def test_a_fee_is_exact_and_clamped(value: Decimal, price: PercentagePrice, currency: str) -> None:
    assert Fraction(fee(value, price, currency)) == oracle_fee(value, price, currency)


@given(st.lists(values, max_size=12), percentage_prices(), st.sampled_from(sorted(EXPONENTS)))
def test_a_line_skips_the_free_events_and_rounds_once(
    events: list[Decimal], price: PercentagePrice, currency: str
) -> None:
    fees = [fee(v, price, currency) for v in events]
    expected = oracle_amount(events, price, currency)
    assert line_amount(fees, price.free_units) == expected
    tally = FeeTally.of(enumerate(fees))
    assert tally.amount(price.free_units) == expected


@given(
    st.lists(st.tuples(st.integers(0, 50), values), max_size=10),
    st.lists(st.tuples(st.integers(0, 50), values), max_size=10),
    percentage_prices(),
)
def test_merged_tallies_interleave_their_events_by_order(
    first: list[tuple[int, Decimal]], second: list[tuple[int, Decimal]], price: PercentagePrice
) -> None:
    """Two groups on one line: the free events are the earliest of both."""
    first, second = sorted(first, key=lambda e: e[0]), sorted(second, key=lambda e: e[0])
    tally = FeeTally.of((at, fee(v, price, "USD")) for at, v in first).merge(
        FeeTally.of((at, fee(v, price, "USD")) for at, v in second)
    )
    # Ties keep the first tally's events first, as a stable sort does.
    everything = [v for _, v in sorted(first + second, key=lambda e: e[0])]
    assert tally.amount(price.free_units) == oracle_amount(everything, price, "USD")
    assert tally.events == len(everything)


def test_a_tally_that_lists_too_few_early_events_is_refused() -> None:
    tally = FeeTally(total=D(300), events=3, earliest=((1, D(100)),))
    assert tally.amount(1) == 200
    with pytest.raises(ValueError, match="free events"):
        tally.amount(2)


def test_worked_example_and_rounding_half_up() -> None:
    card = PercentagePrice(rate=D("2.9"), fixed_amount_per_event=30)
    assert fee(D("10.00"), card, "USD") == D("59")  # 29 + 30 cents
    assert fee(D("0.05"), card, "USD") == D("30.145")
    assert line_amount([D("30.145"), D("0.355")], None) == 31  # 30.5 -> 31, rounded once
    assert line_amount([D("30.145"), D("0.355")], 1) == 0  # 0.355 -> 0
    capped = PercentagePrice(rate=D("10"), minimum_per_event=50, maximum_per_event=1000)
    assert fee(D("1"), capped, "USD") == 50 and fee(D("1000"), capped, "USD") == 1000
    assert fee(D("100"), capped, "JPY") == 50 and fee(D("100"), capped, "KWD") == 1000


@pytest.mark.parametrize(
    ("price", "currency", "unit", "text"),
    [
        (PercentagePrice(D("2.9"), 30), "USD", "payment", "2.9% + 0.30 per payment"),
        (PercentagePrice(D("1.25")), "USD", None, "1.25%"),
        (PercentagePrice(D("3"), 5), "JPY", None, "3% + 5 per event"),
    ],
)
def test_the_label_names_the_rate(price: PercentagePrice, currency: str, unit: str | None, text: str) -> None:
    assert label(price, currency, unit) == text


@pytest.mark.parametrize("text", ["-0.1", "100.0001", "2.90001", "NaN", "1,5"])
def test_an_invalid_rate_is_refused(text: str) -> None:
    with pytest.raises(InvalidDecimal):
        parse_rate(text)


def test_rates_are_canonical() -> None:
    assert parse_rate("2.9000") == D("2.9") and parse_rate(100) == 100 and parse_rate("0") == 0
