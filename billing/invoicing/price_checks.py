"""What a price may say about dimensions and percentages, checked against its meter (pure).

Problems are ``(field, message)`` pairs, fields relative to the price, as in ``pricing``. A
meter's ``group_by`` is read defensively: a meter without the attribute has no dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from billing.core import money
from billing.core.errors import FieldError, ValidationFailed
from billing.invoicing import percentage, price_match
from billing.invoicing.schemas import PriceIn

MAX_FILTER_VALUES: Final = 100
MAX_VALUE_LENGTH: Final = 128  # a longer group value is refused at ingestion: it could never match
MAX_FEE: Final = 10**15
MAX_FREE_UNITS: Final = 10**9
PERCENTAGE_FIELDS: Final = (
    "rate",
    "fixed_amount_per_event",
    "free_units",
    "minimum_per_event",
    "maximum_per_event",
)
TIERED_FIELDS: Final = ("unit_amount", "tiers", "package_size", "package_amount")


def group_by_of(meter: Any) -> list[str]:
    return list(getattr(meter, "group_by", None) or [])


def dimension_problems(price: PriceIn, meter_group_by: Sequence[str]) -> list[tuple[str, str]]:
    """Filters and group_by must name keys of the meter's group_by; 1..100 values per filter."""
    problems: list[tuple[str, str]] = []
    allowed = set(meter_group_by)
    outside = f"is not one of the meter's group_by keys ({', '.join(meter_group_by) or 'none'})"
    for key, values in (price.filters or {}).items():
        field = f"filters.{key}"
        if key not in allowed:
            problems.append((field, outside))
        if not 1 <= len(values) <= MAX_FILTER_VALUES:
            problems.append((field, f"must list 1 to {MAX_FILTER_VALUES} values"))
        problems += [
            (f"{field}[{i}]", f"must be at most {MAX_VALUE_LENGTH} characters")
            for i, value in enumerate(values)
            if len(value) > MAX_VALUE_LENGTH
        ]
    for i, key in enumerate(price.group_by or ()):
        if key not in allowed:
            problems.append((f"group_by[{i}]", outside))
        elif key in (price.group_by or [])[:i]:
            problems.append((f"group_by[{i}]", "is listed twice"))
    return problems


def stored_dimensions(price: PriceIn) -> dict[str, Any]:
    """Filters (values once each, in the order given) and group_by as stored: only when set."""
    stored: dict[str, Any] = {}
    if price.filters:
        stored["filters"] = {key: list(dict.fromkeys(values)) for key, values in price.filters.items()}
    if price.group_by:
        stored["group_by"] = list(price.group_by)
    return stored


def percentage_of(price: PriceIn) -> tuple[percentage.PercentagePrice | None, list[tuple[str, str]]]:
    problems = [
        (name, "is not allowed for model percentage")
        for name in TIERED_FIELDS
        if getattr(price, name) is not None
    ]
    rate: Decimal | None = None
    if price.rate is None:
        problems.append(("rate", "is required"))
    else:
        try:
            rate = percentage.parse_rate(price.rate)
        except money.InvalidDecimal as exc:
            problems.append(("rate", str(exc)))
    for name, ceiling in (
        ("fixed_amount_per_event", MAX_FEE),
        ("free_units", MAX_FREE_UNITS),
        ("minimum_per_event", MAX_FEE),
        ("maximum_per_event", MAX_FEE),
    ):
        value = getattr(price, name)
        if value is not None and not 0 <= value <= ceiling:
            problems.append((name, f"must be between 0 and {ceiling}"))
    if problems or rate is None:
        return None, problems
    parsed = percentage.PercentagePrice(
        rate=rate,
        fixed_amount_per_event=price.fixed_amount_per_event or 0,
        free_units=price.free_units,
        minimum_per_event=price.minimum_per_event,
        maximum_per_event=price.maximum_per_event,
    )
    return parsed, []


def percentage_fields_problems(price: PriceIn) -> list[tuple[str, str]]:
    """A tiered, per-unit or package price sets none of the percentage fields."""
    return [
        (name, f"is not allowed for model {price.model}")
        for name in PERCENTAGE_FIELDS
        if getattr(price, name) is not None
    ]


def stored_percentage(price: percentage.PercentagePrice) -> dict[str, Any]:
    stored: dict[str, Any] = {
        "model": "percentage",
        "rate": money.format_decimal(price.rate),
        "fixed_amount_per_event": price.fixed_amount_per_event,
    }
    optional = {
        "free_units": price.free_units,
        "minimum_per_event": price.minimum_per_event,
        "maximum_per_event": price.maximum_per_event,
    }
    return stored | {name: value for name, value in optional.items() if value is not None}


def check_models(prices: Sequence[PriceIn], aggregations: Sequence[str | None]) -> None:
    """A percentage price needs a meter that sums (each event's value is money)."""
    errors = [
        FieldError(f"prices[{index}].model", f"a percentage price needs a sum meter, not {aggregation}")
        for index, (price, aggregation) in enumerate(zip(prices, aggregations, strict=True))
        if price.model == "percentage" and aggregation is not None and aggregation != "sum"
    ]
    if errors:
        raise ValidationFailed(
            "A percentage price's meter must aggregate sum", code="invalid_model", errors=errors
        )


def check_unambiguous(stored: Sequence[dict[str, Any]]) -> None:
    """Every group of a meter must have one winning price: see ``price_match``."""
    by_meter: dict[str, list[int]] = {}
    for index, price in enumerate(stored):
        by_meter.setdefault(price["meter_id"], []).append(index)
    errors = []
    for indexes in by_meter.values():
        terms = [price_match.Terms.of(stored[i]) for i in indexes]
        for a, b in price_match.ambiguous_pairs(terms):
            first, second = indexes[a], indexes[b]
            errors.append(
                FieldError(
                    f"prices[{second}].filters",
                    f"overlaps prices[{first}]: prices with as many filter keys must share a key "
                    "whose value lists are disjoint",
                )
            )
    if errors:
        raise ValidationFailed("Some events would match two prices", code="ambiguous_prices", errors=errors)
