from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core.money import InvalidDecimal, UnknownCurrency, exact_add
from billing.invoicing.pricing import (
    MODELS,
    Charge,
    InvalidPrice,
    Price,
    Tier,
    charge,
    marginal_amount,
    validate_price,
)

D = Decimal
EXPONENTS = {"JPY": 0, "USD": 2, "KWD": 3}  # written out: the oracle does not ask billing.core.money
TINY = D("1E-12")


def scaled(units: int, places: int) -> Decimal:
    """Exactly ``units / 10**places``."""
    return D(f"{units}E-{places}")


def tiers(*specs: tuple[str | None, str] | tuple[str | None, str, int]) -> tuple[Tier, ...]:
    return tuple(Tier(None if spec[0] is None else D(spec[0]), D(spec[1]), *spec[2:]) for spec in specs)


def amount(price: Price, quantity: str, currency: str = "USD") -> int:
    return charge(price, D(quantity), currency).amount


# --- independent oracle: fractions only, no billing.core.money --------------------------------


def oracle_exact(price: Price, quantity: Decimal, currency: str) -> Fraction:
    """Exact line amount in minor units, recomputed with fractions."""
    q = max(Fraction(quantity), Fraction(0))
    scale = 10 ** EXPONENTS[currency]
    if price.model == "per_unit":
        return q * Fraction(price.unit_amount) * scale
    if price.model == "package":
        return Fraction(math.ceil(q / Fraction(price.package_size)) * price.package_amount)
    if price.model == "volume":
        tier = next(t for t in price.tiers if t.up_to is None or q <= Fraction(t.up_to))
        return q * Fraction(tier.unit_amount) * scale + (tier.flat_amount if q > 0 else 0)
    total = Fraction(0)
    bounds = [Fraction(0)] + [Fraction(t.up_to) if t.up_to is not None else q for t in price.tiers]
    for lower, upper, tier in zip(bounds[:-1], bounds[1:], price.tiers, strict=True):
        inside = min(q, upper) - lower
        if inside > 0:
            total += inside * Fraction(tier.unit_amount) * scale + tier.flat_amount
    return total


def oracle_round(exact: Fraction) -> int:
    """ROUND_HALF_UP of a non-negative fraction to an integer."""
    assert exact >= 0
    return (2 * exact.numerator + exact.denominator) // (2 * exact.denominator)


# --- strategies ----------------------------------------------------------------------------


@st.composite
def decimals(draw: st.DrawFn, min_value: int = 0, max_value: int = 10**15) -> Decimal:
    """Decimals in [min_value, max_value] with at most 12 fractional digits."""
    places = draw(st.integers(0, 12))
    return scaled(draw(st.integers(min_value * 10**places, max_value * 10**places)), places)


quantities = st.one_of(decimals(0, 2000), decimals(-(10**15), 10**15), decimals(0, 10**15))
unit_amounts = st.one_of(decimals(0, 10), decimals(0, 10**15))
flat_amounts = st.integers(0, 10**9)
currencies = st.sampled_from(sorted(EXPONENTS))


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    """One to five tiers: sorted distinct positive up_tos, then an open-ended tier."""
    bound = draw(st.sampled_from([1000, 10**15]))
    up_tos = sorted(draw(st.lists(decimals(0, bound).filter(lambda d: d > 0), max_size=4, unique=True)))
    return tuple(Tier(up_to, draw(unit_amounts), draw(flat_amounts)) for up_to in [*up_tos, None])


@st.composite
def prices(draw: st.DrawFn, models: tuple[str, ...] = MODELS) -> Price:
    model = draw(st.sampled_from(models))
    if model == "per_unit":
        return Price(model, unit_amount=draw(unit_amounts))
    if model == "package":
        size = draw(st.one_of(decimals(0, 1000), decimals(0, 10**15)).filter(lambda d: d > 0))
        return Price(model, package_size=size, package_amount=draw(flat_amounts))
    return Price(model, tiers=draw(tier_lists()))


# --- worked examples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit_amount", "quantity", "currency", "expected"),
    [
        ("0.002", "12000", "USD", 2400),
        ("0.002", "12000", "JPY", 24),
        ("0.002", "12000", "KWD", 24000),
        ("0.0015", "1", "KWD", 2),  # 1.5 fils rounds up
        ("0.0014", "1", "KWD", 1),
        ("0.5", "1", "JPY", 1),  # half a yen rounds up
        ("0.25", "1", "JPY", 0),
        ("0.5", "3", "JPY", 2),
        ("0.005", "1", "USD", 1),  # half a cent rounds up
        ("0.004999999999", "1", "USD", 0),
        ("0.01", "999999999999999.999999999999", "USD", 10**15),  # 999999999999999.999999999999 cents
        ("0.000000000001", "1000000000000000", "KWD", 1000000),
        ("19.99", "2.5", "USD", 4998),  # 4997.5
        ("0", "1000", "USD", 0),
    ],
)
def test_per_unit(unit_amount: str, quantity: str, currency: str, expected: int) -> None:
    result = charge(Price("per_unit", unit_amount=D(unit_amount)), D(quantity), currency)
    assert result.amount == expected
    assert result.tiers == ()
    assert result.quantity == D(quantity)


def test_per_unit_charge_is_exact() -> None:
    result = charge(Price("per_unit", unit_amount=D("0.0015")), D("3"), "USD")
    assert result == Charge(quantity=D(3), exact_amount=D("0.45"), amount=0, tiers=())


VOLUME = Price("volume", tiers=tiers(("10", "1.00", 500), ("100", "0.50"), (None, "0.25", 7)))


@pytest.mark.parametrize(
    ("quantity", "expected", "chosen"),
    [
        ("1", 600, 0),
        ("10", 1500, 0),  # up_to is inclusive
        ("10.5", 525, 1),  # fractional units above up_to fall in the next tier
        ("11", 550, 1),
        ("100", 5000, 1),
        ("100.000000000001", 2507, 2),  # 2500.000000000025 + 7
        ("101", 2532, 2),  # 2525 + 7
    ],
)
def test_volume(quantity: str, expected: int, chosen: int) -> None:
    result = charge(VOLUME, D(quantity), "USD")
    assert result.amount == expected
    assert [tier.quantity for tier in result.tiers] == [D(quantity) if i == chosen else 0 for i in range(3)]
    assert [tier.flat_amount for tier in result.tiers] == [
        VOLUME.tiers[i].flat_amount if i == chosen else 0 for i in range(3)
    ]


def test_volume_in_jpy_and_kwd() -> None:
    price = Price("volume", tiers=tiers(("10", "8"), (None, "6")))
    assert [amount(price, q, "JPY") for q in ("10", "11", "10.5")] == [80, 66, 63]
    assert [amount(price, q, "KWD") for q in ("10", "11", "10.5")] == [80000, 66000, 63000]
    assert amount(Price("volume", tiers=tiers(("1", "0.0005"), (None, "0"))), "1", "KWD") == 1


GRADUATED = Price("graduated", tiers=tiers(("100", "0.10"), ("1000", "0.05", 1000), (None, "0.01", 5000)))


@pytest.mark.parametrize(
    ("quantity", "expected", "tier_quantities", "flats"),
    [
        ("0", 0, ["0", "0", "0"], [0, 0, 0]),
        ("100", 1000, ["100", "0", "0"], [0, 0, 0]),  # the second tier is not entered yet
        ("100.5", 2003, ["100", "0.5", "0"], [0, 1000, 0]),  # 1000 + 2.5 + 1000
        ("1000", 6500, ["100", "900", "0"], [0, 1000, 0]),
        ("1500", 12000, ["100", "900", "500"], [0, 1000, 5000]),
    ],
)
def test_graduated(quantity: str, expected: int, tier_quantities: list[str], flats: list[int]) -> None:
    result = charge(GRADUATED, D(quantity), "USD")
    assert result.amount == expected
    assert [tier.quantity for tier in result.tiers] == [D(q) for q in tier_quantities]
    assert [tier.flat_amount for tier in result.tiers] == flats


def test_graduated_as_in_the_api_spec() -> None:
    price = Price("graduated", tiers=tiers(("1000", "0", 0), (None, "0.0015")))
    assert [amount(price, q) for q in ("999", "1000", "1001", "2000", "1333")] == [0, 0, 0, 150, 50]
    assert [amount(price, q, "KWD") for q in ("1001", "1333")] == [2, 500]  # 1.5 -> 2; 499.5 -> 500
    assert [amount(price, q, "JPY") for q in ("1333", "1334")] == [0, 1]  # 0.4995 -> 0; 0.501 -> 1


def test_graduated_rounds_the_line_once_not_each_tier() -> None:
    price = Price("graduated", tiers=tiers(("1", "0.4"), (None, "0.4")))
    result = charge(price, D(2), "JPY")
    assert [tier.amount for tier in result.tiers] == [0, 0]  # display only
    assert result.exact_amount == D("0.8")
    assert result.amount == 1


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("0", 0), ("1", 500), ("100", 500), ("100.5", 1000), ("101", 1000), ("200", 1000), ("0.001", 500)],
)
@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_package(quantity: str, expected: int, currency: str) -> None:
    price = Price("package", package_size=D("100"), package_amount=500)
    assert amount(price, quantity, currency) == expected


def test_package_with_a_fractional_size() -> None:
    price = Price("package", package_size=D("0.000000000003"), package_amount=7)
    assert amount(price, "0.000000000007") == 21  # ceil(7/3) = 3 packages
    assert amount(price, "999999999999999.999999999999") == 7 * 333333333333333333333333333


@pytest.mark.parametrize("price", [Price("per_unit", unit_amount=D("2")), GRADUATED, VOLUME])
@pytest.mark.parametrize("quantity", ["0", "-1", "-0.5", "-1000000"])
def test_quantity_at_or_below_zero_bills_nothing(price: Price, quantity: str) -> None:
    result = charge(price, D(quantity), "USD")
    assert (result.quantity, result.exact_amount, result.amount) == (0, 0, 0)
    assert len(result.tiers) == len(price.tiers)
    assert all((t.quantity, t.flat_amount, t.exact_amount, t.amount) == (0, 0, 0, 0) for t in result.tiers)


def test_negative_quantity_of_packages_bills_nothing() -> None:
    assert amount(Price("package", package_size=D(10), package_amount=5), "-11") == 0


def test_marginal_amount() -> None:
    assert marginal_amount(GRADUATED, D(100), D("100.5"), "USD") == 1003
    assert marginal_amount(GRADUATED, D("100.5"), D(1500), "USD") == 12000 - 2003
    assert marginal_amount(VOLUME, D(10), D(11), "USD") == 550 - 1500  # volume can go down
    assert marginal_amount(VOLUME, D(10), D(10), "USD") == 0


def test_charge_rejects_an_invalid_price() -> None:
    with pytest.raises(InvalidPrice) as raised:
        charge(Price("volume", tiers=tiers(("10", "1"))), D(1), "USD")
    assert raised.value.problems == [("tiers[0].up_to", "the last tier must be open-ended (null)")]


@pytest.mark.parametrize("quantity", [1.5, 2, "2", D("NaN"), D("Infinity"), True])
def test_charge_rejects_a_quantity_that_is_not_a_finite_decimal(quantity: object) -> None:
    with pytest.raises(InvalidDecimal):
        charge(Price("per_unit", unit_amount=D(1)), quantity, "USD")  # type: ignore[arg-type]


def test_charge_rejects_an_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency):
        charge(Price("per_unit", unit_amount=D(1)), D(1), "usd")


# --- properties ----------------------------------------------------------------------------


@given(prices(), quantities, currencies)
def test_every_model_matches_the_fraction_oracle(price: Price, quantity: Decimal, currency: str) -> None:
    result = charge(price, quantity, currency)
    exact = oracle_exact(price, quantity, currency)
    assert Fraction(result.exact_amount) == exact
    assert result.amount == oracle_round(exact)
    assert result.quantity == max(quantity, 0)


@given(prices(), quantities, currencies)
def test_tier_breakdown_adds_up(price: Price, quantity: Decimal, currency: str) -> None:
    result = charge(price, quantity, currency)
    if price.model in ("per_unit", "package"):
        assert result.tiers == ()
        return
    assert len(result.tiers) == len(price.tiers)
    assert sum(map(Fraction, (t.exact_amount for t in result.tiers))) == Fraction(result.exact_amount)
    assert sum(map(Fraction, (t.quantity for t in result.tiers))) == Fraction(result.quantity)
    for tier, priced in zip(price.tiers, result.tiers, strict=True):
        assert (priced.up_to, priced.unit_amount) == (tier.up_to, tier.unit_amount)
        assert priced.flat_amount == (tier.flat_amount if priced.quantity > 0 else 0)
        assert priced.amount == oracle_round(Fraction(priced.exact_amount))
    if price.model == "volume":
        assert sum(1 for t in result.tiers if t.quantity != 0) <= 1


@given(prices(("graduated",)), quantities, quantities, currencies)
def test_graduated_is_monotone(price: Price, a: Decimal, b: Decimal, currency: str) -> None:
    low, high = sorted([a, b])
    low_charge, high_charge = charge(price, low, currency), charge(price, high, currency)
    assert low_charge.exact_amount <= high_charge.exact_amount
    assert low_charge.amount <= high_charge.amount


@given(tier_lists(), currencies)
def test_volume_picks_the_tier_ending_at_each_edge(tier_list: tuple[Tier, ...], currency: str) -> None:
    price = Price("volume", tiers=tier_list)
    for i, tier in enumerate(tier_list[:-1]):
        assert tier.up_to is not None
        assert _chosen(charge(price, tier.up_to, currency)) == i
        assert _chosen(charge(price, exact_add(tier.up_to, TINY), currency)) == i + 1


def _chosen(result: Charge) -> int:
    (index,) = [i for i, tier in enumerate(result.tiers) if tier.quantity != 0]
    return index


@given(decimals(-(10**15), 10**15), decimals(0, 10**15).filter(lambda d: d > 0), flat_amounts)
def test_package_is_a_ceiling_of_whole_packages(
    quantity: Decimal, size: Decimal, package_amount: int
) -> None:
    price = Price("package", package_size=size, package_amount=package_amount)
    packages = max(math.ceil(Fraction(quantity) / Fraction(size)), 0)
    assert charge(price, quantity, "USD").amount == packages * package_amount


@given(prices(), quantities, quantities, currencies)
def test_marginal_amounts_add_up_to_the_total(
    price: Price, billed: Decimal, new: Decimal, currency: str
) -> None:
    assert (
        marginal_amount(price, billed, new, currency) + charge(price, billed, currency).amount
        == charge(price, new, currency).amount
    )
    assert marginal_amount(price, new, new, currency) == 0


@given(prices())
def test_generated_prices_are_valid(price: Price) -> None:
    assert validate_price(price) == []


# --- validate_price ------------------------------------------------------------------------

OPEN = Tier(None, D("1"))


@pytest.mark.parametrize(
    "price",
    [
        Price("per_unit", unit_amount=D("0.002")),
        Price("per_unit", unit_amount=D("0")),
        Price("per_unit", unit_amount=D("0.123456789012")),
        Price("per_unit", unit_amount=D("0.1000000000000000000")),  # trailing zeros do not count
        Price("per_unit", unit_amount=D("1E+3")),
        Price("graduated", tiers=tiers(("1000", "0", 0), (None, "0.0015"))),
        Price("volume", tiers=tiers(("10", "8"), (None, "6"))),
        Price("volume", tiers=(OPEN,)),
        Price("graduated", tiers=tiers(("0.000000000001", "1", 5), ("1E+15", "2"), (None, "3", 0))),
        Price("package", package_size=D("100"), package_amount=500),
        Price("package", package_size=D("0.5"), package_amount=0),
    ],
)
def test_valid_prices(price: Price) -> None:
    assert validate_price(price) == []


@pytest.mark.parametrize(
    ("price", "fields"),
    [
        (Price("flat", unit_amount=D(1)), ["model"]),
        (Price("per_unit"), ["unit_amount"]),
        (Price("per_unit", unit_amount=D("-0.01")), ["unit_amount"]),
        (Price("per_unit", unit_amount=D("0.0000000000001")), ["unit_amount"]),
        (Price("per_unit", unit_amount=D("1E+16")), ["unit_amount"]),
        (Price("per_unit", unit_amount=D("NaN")), ["unit_amount"]),
        (Price("per_unit", unit_amount=0.5), ["unit_amount"]),  # type: ignore[arg-type]
        (Price("per_unit", unit_amount=D(1), tiers=(OPEN,)), ["tiers"]),
        (Price("per_unit", unit_amount=D(1), package_size=D(1)), ["package_size"]),
        (Price("per_unit", unit_amount=D(1), package_amount=0), ["package_amount"]),
        (Price("graduated"), ["tiers"]),
        (Price("volume", tiers=()), ["tiers"]),
        (Price("graduated", tiers=(OPEN,), unit_amount=D(1)), ["unit_amount"]),
        (
            Price("volume", tiers=(OPEN,), package_size=D(1), package_amount=1),
            ["package_size", "package_amount"],
        ),
        (Price("graduated", tiers=tiers(("10", "1"), ("20", "1"))), ["tiers[1].up_to"]),
        (Price("volume", tiers=tiers((None, "1"), ("20", "1"))), ["tiers[0].up_to", "tiers[1].up_to"]),
        (Price("graduated", tiers=tiers((None, "1"), (None, "1"))), ["tiers[0].up_to"]),
        (Price("graduated", tiers=tiers(("10", "1"), ("5", "1"), (None, "1"))), ["tiers[1].up_to"]),
        (Price("volume", tiers=tiers(("10", "1"), ("10.0", "1"), (None, "1"))), ["tiers[1].up_to"]),
        (Price("graduated", tiers=tiers(("0", "1"), (None, "1"))), ["tiers[0].up_to"]),
        (Price("graduated", tiers=tiers(("-5", "1"), (None, "1"))), ["tiers[0].up_to"]),
        (Price("volume", tiers=tiers(("0.0000000000001", "1"), (None, "1"))), ["tiers[0].up_to"]),
        (Price("volume", tiers=tiers(("10", "-1"), (None, "1"))), ["tiers[0].unit_amount"]),
        (Price("graduated", tiers=tiers(("10", "1"), (None, "0.1234567890123"))), ["tiers[1].unit_amount"]),
        (Price("graduated", tiers=tiers(("10", "1"), (None, "1", -1))), ["tiers[1].flat_amount"]),
        (Price("volume", tiers=(Tier(None, D(1), 1.5),)), ["tiers[0].flat_amount"]),  # type: ignore[arg-type]
        (Price("volume", tiers=(Tier(None, D(1), True),)), ["tiers[0].flat_amount"]),
        (Price("package", package_amount=500), ["package_size"]),
        (Price("package", package_size=D(0), package_amount=500), ["package_size"]),
        (Price("package", package_size=D(-1), package_amount=500), ["package_size"]),
        (Price("package", package_size=D("0.0000000000001"), package_amount=500), ["package_size"]),
        (Price("package", package_size=D(100)), ["package_amount"]),
        (Price("package", package_size=D(100), package_amount=-1), ["package_amount"]),
        (Price("package", package_size=D(100), package_amount=D(5)), ["package_amount"]),  # type: ignore[arg-type]
        (Price("package", package_size=D(100), package_amount=5, unit_amount=D(1)), ["unit_amount"]),
        (Price("package", package_size=D(100), package_amount=5, tiers=(OPEN,)), ["tiers"]),
    ],
)
def test_invalid_prices(price: Price, fields: list[str]) -> None:
    problems = validate_price(price)
    assert [field for field, _ in problems] == fields
    assert all(message for _, message in problems)


def test_problem_messages() -> None:
    price = Price("graduated", tiers=tiers(("10", "1"), ("5", "1"), (None, "1")))
    assert validate_price(price) == [("tiers[1].up_to", "must be greater than the previous tier's up_to")]
    assert validate_price(Price("cubic")) == [
        ("model", "must be one of per_unit, graduated, volume, package")
    ]
    assert validate_price(Price("per_unit", unit_amount=D("0.0000000000001"))) == [
        ("unit_amount", "must have at most 12 fractional digits")
    ]
