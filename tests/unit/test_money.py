from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, localcontext

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from billing.core import money
from billing.core.money import (
    CURRENCY_EXPONENTS,
    MAX_FRACTION_DIGITS,
    MAX_MAGNITUDE,
    InvalidDecimal,
    UnknownCurrency,
    exponent,
    format_decimal,
    format_money,
    from_minor_units,
    is_currency,
    minor_units_bound,
    multiply_to_minor_units,
    parse_decimal,
    round_half_up,
    to_minor_units,
)

LARGEST = "999999999999999.999999999999"  # 15 integer + 12 fractional digits


def scaled(units: int, places: int) -> Decimal:
    """Exactly ``units / 10**places``."""
    return Decimal(f"{units}E-{places}")


def round_half_away_from_zero(numerator: int, denominator: int) -> int:
    """Integer-only oracle for ROUND_HALF_UP of ``numerator / denominator``."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return -quotient if numerator < 0 else quotient


@st.composite
def decimals_within_limits(draw: st.DrawFn) -> Decimal:
    """Any value parse_decimal accepts: |x| <= 10**15 with at most 12 fractional digits."""
    places = draw(st.integers(0, MAX_FRACTION_DIGITS))
    bound = 10**15 * 10**places
    return scaled(draw(st.integers(-bound, bound)), places)


currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
currencies_by_exponent = st.sampled_from(["JPY", "USD", "KWD", "CLF"])  # exponents 0, 2, 3, 4


# --- currency table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "digits"),
    [
        ("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("KRW", 0), ("CLP", 0), ("VND", 0),
        ("ISK", 0), ("UGX", 0), ("KWD", 3), ("BHD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3),
        ("LYD", 3), ("IQD", 3), ("CLF", 4), ("UYW", 4),
    ],
)  # fmt: skip
def test_exponent_is_the_iso_4217_minor_unit(code: str, digits: int) -> None:
    assert exponent(code) == digits
    assert is_currency(code)


@pytest.mark.parametrize("code", ["usd", "US", "ZZZ", "USDX", "", "XAU", "XXX", "XTS", "XDR"])
def test_unknown_or_unbillable_codes_are_rejected(code: str) -> None:
    with pytest.raises(UnknownCurrency, match="unknown currency"):
        exponent(code)
    assert not is_currency(code)


def test_unknown_currency_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        exponent("ZZZ")


def test_currency_table_holds_only_upper_case_codes_with_plausible_exponents() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    for code, digits in CURRENCY_EXPONENTS.items():
        assert re.fullmatch("[A-Z]{3}", code), code
        assert digits in {0, 2, 3, 4}, code


def test_currency_table_cannot_be_modified() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["USD"] = 3  # type: ignore[index]


# --- parse_decimal --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.5", "12.5"),
        ("-3", "-3"),
        ("+7", "7"),
        ("1e3", "1000"),
        ("1E-12", "0.000000000001"),
        ("0.000000000001", "0.000000000001"),
        ("1.5000000000000", "1.5"),  # trailing zeros do not count as fractional digits
        ("1000000000000000", "1000000000000000"),
        ("-" + LARGEST, "-" + LARGEST),
        (LARGEST, LARGEST),
        ("-0", "0"),
        (".5", "0.5"),
    ],
)
def test_parse_decimal_accepts_decimal_strings_exactly(text: str, expected: str) -> None:
    parsed = parse_decimal(text)
    assert parsed == Decimal(expected)
    assert format_decimal(parsed) == expected


def test_parse_decimal_accepts_ints_and_decimals() -> None:
    assert parse_decimal(42) == Decimal(42)
    assert parse_decimal(-(10**15)) == Decimal(-(10**15))
    assert parse_decimal(Decimal("2.50")) == Decimal("2.5")
    assert parse_decimal(Decimal("1E+15")) == MAX_MAGNITUDE


def test_parse_decimal_returns_canonical_decimals() -> None:
    assert str(parse_decimal("1e3")) == "1000"
    assert str(parse_decimal("12.500")) == "12.5"
    assert str(parse_decimal(Decimal("-0.00"))) == "0"


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "\t\n", "nan", "NaN", "-nan", "sNaN", "inf", "Infinity", "-Infinity",
        "abc", "1,5", "1_000", " 1", "1 ", "0x10", "1e", "--1", "1.2.3", "\u0661\u0662",
    ],
)  # fmt: skip
def test_parse_decimal_rejects_text_that_is_not_a_finite_decimal(text: str) -> None:
    with pytest.raises(InvalidDecimal, match="not a decimal number"):
        parse_decimal(text)


@pytest.mark.parametrize(
    "value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")]
)
def test_parse_decimal_rejects_non_finite_decimals(value: Decimal) -> None:
    with pytest.raises(InvalidDecimal, match="not a finite number"):
        parse_decimal(value)


@pytest.mark.parametrize("value", [True, False, 1.5, 0.0, None, b"1"])
def test_parse_decimal_rejects_bools_floats_and_other_types(value: object) -> None:
    with pytest.raises(InvalidDecimal, match="expected a decimal string, int or Decimal"):
        parse_decimal(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1.0000000000001", "0.0000000000001", "1e-13", Decimal("1E-13")])
def test_parse_decimal_rejects_more_than_twelve_fractional_digits(value: str | Decimal) -> None:
    with pytest.raises(InvalidDecimal, match="13 fractional digits; at most 12 are allowed"):
        parse_decimal(value)


@pytest.mark.parametrize(
    "value", ["1000000000000000.000000000001", "-1000000000000001", "1e16", 10**15 + 1, Decimal("1E+100")]
)
def test_parse_decimal_rejects_magnitudes_over_ten_to_the_fifteen(value: str | int | Decimal) -> None:
    with pytest.raises(InvalidDecimal, match="larger in magnitude than 1000000000000000"):
        parse_decimal(value)


def test_parse_decimal_rejects_absurd_exponents_without_hanging() -> None:
    for text in ["1e999999999999999999", "1e-999999999999999999", "1e99999999999999999999999999999"]:
        with pytest.raises(InvalidDecimal):
            parse_decimal(text)


def test_parse_decimal_honours_custom_limits() -> None:
    assert parse_decimal("1.230", max_fraction_digits=2) == Decimal("1.23")
    with pytest.raises(InvalidDecimal, match="3 fractional digits; at most 2"):
        parse_decimal("1.234", max_fraction_digits=2)
    assert parse_decimal("-100", max_magnitude=Decimal(100)) == Decimal(-100)
    with pytest.raises(InvalidDecimal, match="larger in magnitude than 100"):
        parse_decimal("100.01", max_magnitude=Decimal(100))


def test_parse_and_multiply_ignore_a_low_precision_global_context() -> None:
    with localcontext(prec=3, rounding=ROUND_DOWN) as ctx:
        assert format_decimal(parse_decimal(LARGEST)) == LARGEST
        largest = parse_decimal(LARGEST)
        # (10**15 - 10**-12) ** 2 = 10**30 - 2000 + 10**-24, in cents
        assert multiply_to_minor_units(largest, largest, "USD") == 10**32 - 200_000
        assert (ctx.prec, ctx.rounding) == (3, ROUND_DOWN)


def test_exact_sum_is_exact_beyond_a_low_precision_global_context() -> None:
    values = [Decimal(LARGEST)] * 1000 + [Decimal("0.000000000001")] * 3
    with localcontext(prec=3, rounding=ROUND_DOWN) as ctx:
        total = money.exact_sum(values)
        assert (ctx.prec, ctx.rounding) == (3, ROUND_DOWN)
    assert total == Decimal("999999999999999999.999999999003")
    assert money.exact_sum(iter(())) == 0


@given(decimals_within_limits())
@example(MAX_MAGNITUDE)
@example(-Decimal(LARGEST))
@example(Decimal("-0"))
def test_format_then_parse_round_trips(value: Decimal) -> None:
    text = format_decimal(value)
    assert re.fullmatch(r"0|-?[1-9][0-9]*(\.[0-9]*[1-9])?|-?0\.[0-9]*[1-9]", text), text
    assert parse_decimal(text) == value
    assert format_decimal(parse_decimal(text)) == text


@given(decimals_within_limits())
def test_parse_accepts_any_string_form_of_an_accepted_value(value: Decimal) -> None:
    assert parse_decimal(str(value)) == value  # str() may use exponent notation


# --- format_decimal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1E+3"), "1000"),
        (Decimal("12.500"), "12.5"),
        (Decimal("0.0000000000010"), "0.000000000001"),
        (Decimal("-0"), "0"),
        (Decimal("-0.000"), "0"),
        (Decimal("0E+5"), "0"),
        (Decimal("-12.3400"), "-12.34"),
        (Decimal("5E-1"), "0.5"),
        (Decimal("100"), "100"),
    ],
)
def test_format_decimal_is_plain_and_canonical(value: Decimal, expected: str) -> None:
    assert format_decimal(value) == expected


def test_format_decimal_refuses_non_finite_values() -> None:
    with pytest.raises(InvalidDecimal):
        format_decimal(Decimal("NaN"))


# --- round_half_up --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        ("2.5", 0, "3"),
        ("-2.5", 0, "-3"),
        ("2.4999", 0, "2"),
        ("-2.4999", 0, "-2"),
        ("1.005", 2, "1.01"),
        ("-1.005", 2, "-1.01"),
        ("1234.5", -1, "1230"),
        ("1235", -1, "1240"),
        ("0.4", 0, "0"),
    ],
)
def test_round_half_up_rounds_halves_away_from_zero(value: str, places: int, expected: str) -> None:
    assert round_half_up(Decimal(value), places) == Decimal(expected)


def test_round_half_up_never_returns_negative_zero() -> None:
    assert not round_half_up(Decimal("-0.4"), 0).is_signed()


@given(decimals_within_limits(), st.integers(0, MAX_FRACTION_DIGITS))
def test_round_half_up_moves_a_value_by_at_most_half_a_unit(value: Decimal, places: int) -> None:
    rounded = round_half_up(value, places)
    half_unit = scaled(5, places + 1)
    assert abs(rounded - value) <= half_unit
    assert (rounded * 10**places) % 1 == 0
    assert round_half_up(rounded, places) == rounded
    if abs(rounded - value) == half_unit:
        assert abs(rounded) > abs(value)


# --- minor units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.345", "USD", 1235),
        ("-12.345", "USD", -1235),
        ("12.344", "USD", 1234),
        ("12.5", "JPY", 13),
        ("-12.5", "JPY", -13),
        ("1.0005", "KWD", 1001),
        ("0.00005", "CLF", 1),
        ("0.004999", "USD", 0),
        ("1000000000000000", "CLF", 10**19),
    ],
)
def test_to_minor_units_rounds_once_at_the_currency_exponent(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == minor


def test_to_minor_units_does_not_double_round() -> None:
    # Rounding to 3 places first would give 1.445 and then 1.45.
    assert to_minor_units(Decimal("1.4449"), "USD") == 144


@given(st.integers(-(10**27), 10**27), st.integers(0, MAX_FRACTION_DIGITS), currencies_by_exponent)
def test_to_minor_units_matches_integer_arithmetic(units: int, places: int, currency: str) -> None:
    digits = exponent(currency)
    expected = round_half_away_from_zero(units * 10**digits, 10**places)
    assert to_minor_units(scaled(units, places), currency) == expected


@given(st.integers(-(10**15), 10**15), currencies_by_exponent)
def test_to_minor_units_rounds_exact_halves_away_from_zero(minor: int, currency: str) -> None:
    # minor + 0.5 minor units, written in major units
    tie = scaled((2 * minor + 1) * 5, exponent(currency) + 1)
    assert to_minor_units(tie, currency) == (minor + 1 if minor >= 0 else minor)


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [
        (1234, "USD", "12.34"),
        (-5, "USD", "-0.05"),
        (1234, "JPY", "1234"),
        (1, "KWD", "0.001"),
        (1, "CLF", "0.0001"),
    ],
)
def test_from_minor_units_gives_the_exact_major_amount(minor: int, currency: str, amount: str) -> None:
    assert from_minor_units(minor, currency) == Decimal(amount)


def test_from_minor_units_refuses_bools() -> None:
    with pytest.raises(TypeError):
        from_minor_units(True, "USD")


@given(st.integers(-(10**30), 10**30), currencies)
def test_minor_units_round_trip_through_major_units(minor: int, currency: str) -> None:
    major = from_minor_units(minor, currency)
    assert to_minor_units(major, currency) == minor
    assert major == scaled(minor, exponent(currency))


def test_minor_unit_conversions_reject_unknown_currencies() -> None:
    with pytest.raises(UnknownCurrency):
        to_minor_units(Decimal(1), "usd")
    with pytest.raises(UnknownCurrency):
        from_minor_units(1, "XAU")


def test_multiply_to_minor_units_rounds_the_exact_product_once() -> None:
    # 3 * 0.335 = 1.005 -> 100.5 cents -> 101; rounding the unit price to 0.34 first would give 102.
    assert multiply_to_minor_units(Decimal(3), Decimal("0.335"), "USD") == 101
    assert multiply_to_minor_units(Decimal("0.5"), Decimal("0.01"), "USD") == 1
    assert multiply_to_minor_units(Decimal("-0.5"), Decimal("0.01"), "USD") == -1
    assert multiply_to_minor_units(Decimal(1500), Decimal("0.000001"), "JPY") == 0


@given(
    st.integers(-(10**27), 10**27),
    st.integers(0, MAX_FRACTION_DIGITS),
    st.integers(-(10**27), 10**27),
    st.integers(0, MAX_FRACTION_DIGITS),
    currencies_by_exponent,
)
def test_multiply_to_minor_units_matches_integer_arithmetic(
    quantity_units: int, quantity_places: int, price_units: int, price_places: int, currency: str
) -> None:
    expected = round_half_away_from_zero(
        quantity_units * price_units * 10 ** exponent(currency), 10 ** (quantity_places + price_places)
    )
    quantity, price = scaled(quantity_units, quantity_places), scaled(price_units, price_places)
    assert multiply_to_minor_units(quantity, price, currency) == expected


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity")])
def test_minor_unit_conversions_refuse_non_finite_amounts(value: Decimal) -> None:
    with pytest.raises(InvalidDecimal):
        to_minor_units(value, "USD")
    with pytest.raises(InvalidDecimal):
        multiply_to_minor_units(value, Decimal(1), "USD")


# --- format_money ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "expected"),
    [
        (123456, "USD", "en_US", "$1,234.56"),
        (-123456, "USD", "en_US", "-$1,234.56"),
        (5, "USD", "en_US", "$0.05"),
        (0, "USD", "en_US", "$0.00"),
        (1234, "JPY", "ja_JP", "￥1,234"),
        (1234, "JPY", "en_US", "¥1,234"),
        (123456, "EUR", "de_DE", "1.234,56\xa0€"),
        (1234, "KWD", "en_US", "KWD1.234"),
        (12345, "CLF", "en_US", "CLF1.2345"),
        (10**17 + 1, "USD", "en_US", "$1,000,000,000,000,000.01"),
    ],
)
def test_format_money_renders_the_locale_style(minor: int, currency: str, locale: str, expected: str) -> None:
    assert format_money(minor, currency, locale) == expected


def test_format_money_uses_iso_digits_where_cldr_disagrees() -> None:
    # CLDR shows IQD without decimals; ISO 4217 gives it 3, and 1234 minor units is 1.234 dinars.
    assert format_money(1234, "IQD", "en_US") == "IQD1.234"


def test_format_money_defaults_to_en_us() -> None:
    assert format_money(100, "GBP") == "£1.00"


def test_format_money_rejects_unknown_currencies() -> None:
    with pytest.raises(UnknownCurrency):
        format_money(100, "ZZZ")


def test_format_money_ignores_a_low_precision_global_context() -> None:
    with localcontext(prec=3):
        assert format_money(123456, "USD") == "$1,234.56"


@pytest.mark.parametrize(
    ("amount", "places", "lower", "expected"),
    [
        ("12.5", 2, True, 1250),
        ("12.501", 2, True, 1251),  # a lower edge rounds up: 12.50 is below 12.501
        ("12.509", 2, False, 1250),  # an upper edge rounds down
        ("10", 0, True, 10),
        ("0.5", 0, True, 1),
        ("1.2345", 3, False, 1234),
        ("-0.005", 2, True, 0),
        ("-0.005", 2, False, -1),
    ],
)
def test_a_range_edge_in_major_units_becomes_the_tightest_minor_unit_bound(
    amount: str, places: int, lower: bool, expected: int
) -> None:
    assert minor_units_bound(Decimal(amount), places, lower=lower) == expected


def test_currencies_by_exponent_covers_the_table_once() -> None:
    groups = money.currencies_by_exponent()
    assert sorted(code for codes in groups.values() for code in codes) == sorted(CURRENCY_EXPONENTS)
    assert "JPY" in groups[0] and "USD" in groups[2] and "BHD" in groups[3]
