"""Money arithmetic: integer minor units for amounts, ``Decimal`` for unit prices and quantities.

Every decimal operation here runs in an explicit context, so the process-wide decimal context
never affects a result.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)
from types import MappingProxyType
from typing import Final

from babel import Locale
from babel.numbers import NumberPattern, format_currency, parse_pattern

# Source: ISO 4217 List One (current currency & funds code list), as published 2026-01-01 by
# the ISO 4217 maintenance agency (SIX). Codes whose minor unit is "N.A." (XAU, XDR, XTS, XXX,
# ...) are left out: they cannot be billed in minor units.
# fmt: off
CURRENCY_EXPONENTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2,
        "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2,
        "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2,
        "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4, "CLP": 0, "CNY": 2,
        "COP": 2, "COU": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DJF": 0, "DKK": 2,
        "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2,
        "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0, "GTQ": 2, "GYD": 2,
        "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3,
        "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2,
        "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2,
        "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2,
        "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2, "MVR": 2, "MWK": 2, "MXN": 2,
        "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2,
        "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2,
        "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0, "SAR": 2, "SBD": 2,
        "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2, "SRD": 2,
        "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2,
        "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0,
        "USD": 2, "USN": 2, "UYI": 0, "UYU": 2, "UYW": 4, "UZS": 2, "VED": 2, "VES": 2,
        "VND": 0, "VUV": 0, "WST": 2, "XAD": 2, "XAF": 0, "XCD": 2, "XCG": 2, "XOF": 0,
        "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
    }
)
# fmt: on

MAX_FRACTION_DIGITS: Final = 12
MAX_MAGNITUDE: Final = Decimal(10**15)

# Plain decimal notation with an optional exponent; ASCII digits only, no whitespace,
# underscores or special values (which ``Decimal()`` would otherwise accept).
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# Enough digits for the exact product of two validated values (27 significant digits each).
_PRECISION: Final = 100
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)


class UnknownCurrency(ValueError):
    """The code is not an ISO 4217 currency with a minor unit."""


class InvalidDecimal(ValueError):
    """A value is not an acceptable decimal number, for ``reason``.

    With ``value``, the value as it was given (a Decimal as ``str`` shows it: ``NaN``, ``1E+30``),
    the message is ``"<value> <reason>"``; a caller that knows how its user wrote the value can
    name it that way instead.
    """

    def __init__(self, reason: str, *, value: str | None = None) -> None:
        super().__init__(reason if value is None else f"{value} {reason}")
        self.reason = reason


def exponent(currency: str) -> int:
    """Number of minor-unit digits of an upper-case ISO 4217 code, e.g. 2 for USD."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrency(f"unknown currency code '{currency}'") from None


def currencies_by_exponent() -> dict[int, list[str]]:
    """Currency codes grouped by their number of minor-unit digits."""
    groups: dict[int, list[str]] = {}
    for code, places in CURRENCY_EXPONENTS.items():
        groups.setdefault(places, []).append(code)
    return groups


def minor_units_bound(amount: Decimal, places: int, *, lower: bool) -> int:
    """The integer minor-unit bound of a range edge given in major units: a lower edge rounds up
    (0.005 USD admits 1 cent, not 0), an upper edge rounds down."""
    with localcontext(_exact_context()):
        scaled = amount.scaleb(places)
        return int(scaled.to_integral_value(rounding=ROUND_CEILING if lower else ROUND_FLOOR))


def is_currency(code: str) -> bool:
    """Whether ``code`` is an upper-case ISO 4217 code with a minor unit."""
    return code in CURRENCY_EXPONENTS


def parse_decimal(
    value: str | int | Decimal,
    *,
    max_fraction_digits: int = MAX_FRACTION_DIGITS,
    max_magnitude: Decimal = MAX_MAGNITUDE,
) -> Decimal:
    """Exact ``Decimal`` for ``value`` in canonical form, or ``InvalidDecimal``.

    Trailing fractional zeros do not count towards ``max_fraction_digits``.
    """
    number = _to_decimal(value)
    if number.copy_abs() > max_magnitude:
        raise InvalidDecimal(f"is larger in magnitude than {format_decimal(max_magnitude)}", value=str(value))
    canonical = _canonical(number)
    if canonical is None or not _has_at_most(canonical, max_fraction_digits):
        raise InvalidDecimal(
            f"has {_fraction_digits(number)} fractional digits; at most {max_fraction_digits} are allowed",
            value=str(value),
        )
    return canonical


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing fractional zeros: ``Decimal("1E+3")`` -> ``"1000"``."""
    _require_finite(value)
    canonical = _canonical(value)
    if canonical is not None:
        return format(canonical, "f")
    sign, digits, exp = _significant_parts(value)  # beyond the exact context: digit by digit
    if exp >= 0:
        text = digits + "0" * exp
    else:
        padded = digits.rjust(1 - exp, "0")
        text = f"{padded[:exp]}.{padded[exp:]}"
    return f"-{text}" if sign else text


def round_half_up(value: Decimal, places: int) -> Decimal:
    """Round to ``places`` fractional digits, halves away from zero (-2.5 -> -3)."""
    _require_finite(value)
    quantum = Decimal((0, (1,), -places))
    rounded = value.quantize(quantum, rounding=ROUND_HALF_UP, context=_rounding_context())
    return rounded.copy_abs() if rounded.is_zero() else rounded


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Major-unit amount -> integer minor units, rounded once (12.345 USD -> 1235)."""
    places = exponent(currency)
    return int(round_half_up(amount, places).scaleb(places, context=_exact_context()))


def from_minor_units(amount: int, currency: str) -> Decimal:
    """Integer minor units -> exact major-unit amount (1234 USD -> 12.34)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"minor-unit amount must be an int, not {type(amount).__name__}")
    return Decimal(amount).scaleb(-exponent(currency), context=_exact_context())


def multiply_to_minor_units(quantity: Decimal, unit_amount: Decimal, currency: str) -> int:
    """Exact ``quantity * unit_amount`` rounded once to minor units."""
    return to_minor_units(_exact_context().multiply(quantity, unit_amount), currency)


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` without the silent rounding of the default 28-digit context."""
    return _SHARED_EXACT.add(a, b)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    # The built-in sum adds in C, in the current context: here one where rounding is an error.
    with localcontext(_EXACT):
        return sum(values, Decimal(0))


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    """Localised display string, with as many decimals as the ISO 4217 minor unit."""
    places = exponent(currency)
    babel_locale, pattern = _currency_pattern(locale, places)
    amount = from_minor_units(amount_minor, currency)
    # babel does its arithmetic in the current decimal context.
    with localcontext(_rounding_context()):
        return format_currency(amount, currency, format=pattern, locale=babel_locale, currency_digits=False)


@functools.lru_cache(maxsize=1024)
def _currency_pattern(locale: str, places: int) -> tuple[Locale, NumberPattern]:
    """The locale and its currency pattern with ``places`` decimals (parsed once: never changed)."""
    babel_locale = Locale.parse(locale)
    # CLDR's digit counts differ from ISO 4217 for some currencies (IQD: 0 vs 3), so the
    # locale's pattern is given the ISO count and babel is told not to substitute its own.
    pattern = parse_pattern(babel_locale.currency_formats["standard"].pattern)
    pattern.frac_prec = (places, places)
    return babel_locale, pattern


def _to_decimal(value: str | int | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        _require_finite(value)
        return value
    if isinstance(value, str):
        return _decimal_from_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise InvalidDecimal(f"expected a decimal string, int or Decimal, got {type(value).__name__}")


def _decimal_from_text(text: str) -> Decimal:
    if not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidDecimal("is not a decimal number", value=f"'{text}'")
    try:
        with localcontext(_exact_context()):
            return Decimal(text)
    except DecimalException:
        raise InvalidDecimal("is out of range", value=text) from None


def _require_finite(value: Decimal) -> None:
    if not value.is_finite():
        raise InvalidDecimal("is not a finite number", value=str(value))


def _significant_parts(value: Decimal) -> tuple[int, str, int]:
    """Sign, coefficient digits without leading/trailing zeros ("" for zero), and exponent."""
    _require_finite(value)
    sign, digit_tuple, exp = value.as_tuple()
    assert isinstance(exp, int)  # finite values have an integer exponent
    coefficient = "".join(map(str, digit_tuple)).lstrip("0")
    digits = coefficient.rstrip("0")
    return sign, digits, exp + len(coefficient) - len(digits)


def _fraction_digits(value: Decimal) -> int:
    _, digits, exp = _significant_parts(value)
    return max(0, -exp) if digits else 0


def _has_at_most(value: Decimal, fraction_digits: int) -> bool:
    quantum = _QUANTA.get(fraction_digits) or Decimal((0, (1,), -fraction_digits))
    try:
        _SHARED_EXACT.quantize(value, quantum)  # Inexact if digits would be dropped
    except DecimalException:
        return False
    return True


def _canonical(value: Decimal) -> Decimal | None:
    """``value`` without trailing fractional zeros and with an exponent of at most 0 (``1E+3`` ->
    ``1000``, ``-0.0`` -> ``0``); None when it has more significant digits, or a smaller exponent,
    than the exact context holds, which no accepted value has."""
    if value.is_zero():
        return _ZERO
    try:
        # (Context methods: with positional arguments, several times faster than keywords.)
        reduced = _SHARED_EXACT.normalize(value)
        # Normalized, an integer has an exponent of 0 or more (1E+3), anything else less than 0.
        if reduced == _SHARED_EXACT.to_integral_value(reduced):
            return _SHARED_EXACT.quantize(reduced, _ONE)
        return reduced
    except DecimalException:
        return None


def _exact_context() -> Context:
    """Context in which any rounding is an error rather than a silent change of value."""
    return _EXACT.copy()


def _rounding_context() -> Context:
    """Context for deliberate rounding; running out of precision is still an error."""
    return _ROUNDING.copy()


def _context(traps: list[type[DecimalException]]) -> Context:
    # Every field is explicit: omitted ones would be copied from decimal.DefaultContext.
    return Context(
        prec=_PRECISION,
        rounding=ROUND_HALF_UP,
        Emin=-999_999,
        Emax=999_999,
        capitals=1,
        clamp=0,
        flags=[],
        traps=traps,
    )


# Built once: a Context takes microseconds to build and a copy a fraction of that.
_EXACT = _context(traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded])
_ROUNDING = _context(traps=[InvalidOperation, DivisionByZero, Overflow])
# For hot paths (ingestion, rollups), not even copied: a context's traps decide every result,
# and the flags that operations leave on it (which threads could share) are never read.
_SHARED_EXACT = _context(traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded])
_QUANTA = {places: Decimal((0, (1,), -places)) for places in range(MAX_FRACTION_DIGITS + 1)}
