"""Pricing: pure functions from a price and a quantity to an amount in minor units.

Four models (``unit_amount`` is a ``Decimal`` in major units; ``flat_amount`` and
``package_amount`` are ints in minor units; quantities are ``Decimal`` and may be fractional):

- ``per_unit``: quantity x unit_amount.
- ``graduated``: each tier prices only the units inside it, ``(previous up_to, up_to]``, plus
  its ``flat_amount`` once the tier holds more than zero units.
- ``volume``: the first tier whose ``up_to`` is >= the quantity (or the open-ended last one)
  prices every unit, plus its ``flat_amount`` when the quantity is above zero.
- ``package``: ceil(quantity / package_size) x package_amount.

A quantity at or below zero prices to 0 in every model.

Rounding happens exactly once per line: the exact amount in minor units (quantity x
unit_amount x 10**exponent, plus flat amounts) is computed without any rounding, then rounded
half up to an integer. Per-tier ``amount`` values are rounded for display only and need not
sum to the line's ``amount``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from billing.core import money

MODELS: Final = ("per_unit", "graduated", "volume", "package")

_ZERO: Final = Decimal(0)
_TIERED: Final = ("graduated", "volume")
# Fields each model may set; every other optional field must be left unset.
_FIELDS: Final = {
    "per_unit": ("unit_amount",),
    "graduated": ("tiers",),
    "volume": ("tiers",),
    "package": ("package_size", "package_amount"),
}


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None
    unit_amount: Decimal
    flat_amount: int = 0


@dataclass(frozen=True)
class Price:
    model: str
    unit_amount: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_amount: int | None = None


@dataclass(frozen=True)
class TierCharge:
    up_to: Decimal | None
    quantity: Decimal  # units priced in this tier (volume: the whole quantity, in the chosen tier only)
    unit_amount: Decimal
    flat_amount: int  # flat amount actually charged (0 if the tier holds no unit)
    exact_amount: Decimal  # exact, minor units
    amount: int  # exact_amount rounded half up, for display only


@dataclass(frozen=True)
class Charge:
    quantity: Decimal  # the quantity priced, after clamping at 0
    exact_amount: Decimal  # exact, minor units
    amount: int  # exact_amount rounded once, half up
    tiers: tuple[TierCharge, ...]  # empty for per_unit and package


class InvalidPrice(ValueError):
    """``charge`` was given a price that ``validate_price`` rejects."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


def charge(price: Price, quantity: Decimal, currency: str) -> Charge:
    """Price ``quantity`` (clamped at 0) in ``currency``; the amount is rounded once, half up."""
    places = money.exponent(currency)
    if isinstance(quantity, bool) or not isinstance(quantity, Decimal) or not quantity.is_finite():
        raise money.InvalidDecimal(f"quantity must be a finite Decimal, not {quantity!r}")
    problems = _checked(price)
    if problems:
        raise InvalidPrice(list(problems))
    quantity = quantity if quantity > 0 else _ZERO
    tiers: tuple[TierCharge, ...] = ()
    if price.model == "per_unit":
        assert price.unit_amount is not None
        exact = _minor(quantity, price.unit_amount, places)
    elif price.model == "package":
        assert price.package_size is not None and price.package_amount is not None
        exact = Decimal(_packages(quantity, price.package_size) * price.package_amount)
    else:
        pricer = _graduated if price.model == "graduated" else _volume
        tiers = pricer(price.tiers, quantity, places)
        exact = money.exact_sum(tier.exact_amount for tier in tiers)
    return Charge(quantity=quantity, exact_amount=exact, amount=_round(exact), tiers=tiers)


def marginal_amount(price: Price, billed_quantity: Decimal, new_quantity: Decimal, currency: str) -> int:
    """What moving a period's quantity from ``billed_quantity`` to ``new_quantity`` adds.

    ``charge(new).amount - charge(billed).amount``, so that all lines of one period always sum
    to the charge of its total quantity, tiers included.
    """
    return charge(price, new_quantity, currency).amount - charge(price, billed_quantity, currency).amount


@functools.lru_cache(maxsize=4096)
def _checked(price: Price) -> tuple[tuple[str, str], ...]:
    """``validate_price`` once per distinct price: prices are immutable and invoices price many."""
    return tuple(validate_price(price))


def validate_price(price: Price) -> list[tuple[str, str]]:
    """Problems as ``(field, message)`` pairs, fields relative to the price; empty when valid."""
    if price.model not in MODELS:
        return [("model", f"must be one of {', '.join(MODELS)}")]
    problems = [
        (field, f"is not allowed for model {price.model}")
        for field in ("unit_amount", "tiers", "package_size", "package_amount")
        if field not in _FIELDS[price.model] and _is_set(getattr(price, field))
    ]
    if price.model == "per_unit":
        problems += _decimal_problems("unit_amount", price.unit_amount, positive=False)
    elif price.model == "package":
        problems += _decimal_problems("package_size", price.package_size, positive=True)
        problems += _amount_problems("package_amount", price.package_amount)
    else:
        problems += _tiers_problems(price.tiers)
    return problems


def _is_set(value: object) -> bool:
    return value is not None and not (isinstance(value, tuple | list) and not value)


def _graduated(tiers: tuple[Tier, ...], quantity: Decimal, places: int) -> tuple[TierCharge, ...]:
    charges = []
    lower = _ZERO
    for tier in tiers:
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        inside = max(money._exact_context().subtract(upper, lower), _ZERO)
        charges.append(_tier_charge(tier, inside, places))
        if tier.up_to is not None:
            lower = tier.up_to
    return tuple(charges)


def _volume(tiers: tuple[Tier, ...], quantity: Decimal, places: int) -> tuple[TierCharge, ...]:
    chosen = next(i for i, tier in enumerate(tiers) if tier.up_to is None or quantity <= tier.up_to)
    return tuple(
        _tier_charge(tier, quantity if i == chosen else _ZERO, places) for i, tier in enumerate(tiers)
    )


def _tier_charge(tier: Tier, quantity: Decimal, places: int) -> TierCharge:
    flat = tier.flat_amount if quantity > 0 else 0
    exact = money.exact_add(_minor(quantity, tier.unit_amount, places), Decimal(flat))
    return TierCharge(tier.up_to, quantity, tier.unit_amount, flat, exact, _round(exact))


def _minor(quantity: Decimal, unit_amount: Decimal, places: int) -> Decimal:
    """Exact ``quantity x unit_amount`` in minor units."""
    context = money._exact_context()
    return context.multiply(quantity, unit_amount).scaleb(places, context=context)


def _packages(quantity: Decimal, size: Decimal) -> int:
    """ceil(quantity / size) in exact integer arithmetic (quantity >= 0, size > 0)."""
    q_num, q_den = quantity.as_integer_ratio()
    s_num, s_den = size.as_integer_ratio()
    return -(-(q_num * s_den) // (q_den * s_num))


def _round(exact: Decimal) -> int:
    return int(money.round_half_up(exact, 0))


def _tiers_problems(tiers: tuple[Tier, ...]) -> list[tuple[str, str]]:
    if not tiers:
        return [("tiers", "must have at least one tier")]
    problems: list[tuple[str, str]] = []
    previous: Decimal | None = None
    for i, tier in enumerate(tiers):
        field = f"tiers[{i}]"
        last = i == len(tiers) - 1
        if tier.up_to is None and not last:
            problems.append((f"{field}.up_to", "only the last tier may be open-ended (null)"))
        elif tier.up_to is not None and last:
            problems.append((f"{field}.up_to", "the last tier must be open-ended (null)"))
        if tier.up_to is not None:
            up_to_problems = _decimal_problems(f"{field}.up_to", tier.up_to, positive=True)
            if not up_to_problems and previous is not None and tier.up_to <= previous:
                up_to_problems.append((f"{field}.up_to", "must be greater than the previous tier's up_to"))
            problems += up_to_problems
            previous = tier.up_to if not up_to_problems else previous
        problems += _decimal_problems(f"{field}.unit_amount", tier.unit_amount, positive=False)
        problems += _amount_problems(f"{field}.flat_amount", tier.flat_amount)
    return problems


def _decimal_problems(field: str, value: object, *, positive: bool) -> list[tuple[str, str]]:
    if value is None:
        return [(field, "is required")]
    if not isinstance(value, Decimal) or not value.is_finite():
        return [(field, "must be a finite decimal number")]
    if value.copy_abs() > money.MAX_MAGNITUDE:
        return [(field, f"must be at most {money.format_decimal(money.MAX_MAGNITUDE)}")]
    try:
        money.parse_decimal(value)
    except money.InvalidDecimal:
        return [(field, f"must have at most {money.MAX_FRACTION_DIGITS} fractional digits")]
    if positive and value <= 0:
        return [(field, "must be greater than 0")]
    if value < 0:
        return [(field, "must not be negative")]
    return []


def _amount_problems(field: str, value: object) -> list[tuple[str, str]]:
    if value is None:
        return [(field, "is required")]
    if isinstance(value, bool) or not isinstance(value, int):
        return [(field, "must be an integer amount in minor units")]
    if value < 0:
        return [(field, "must not be negative")]
    return []
