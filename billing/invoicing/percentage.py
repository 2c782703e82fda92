"""The percentage model: a fee per event, a share of its value plus a fixed amount (pure).

Each event's ``value`` is money in the plan currency's major units. Its fee, in minor units and
exact, is ``value x rate / 100 x 10**exponent + fixed_amount_per_event``, clamped to
``[minimum_per_event, maximum_per_event]`` where set. The first ``free_units`` events of a
line, in timestamp order (ties: acceptance order), pay nothing. The line's amount is the exact
sum of the others' fees, rounded once, half up.

A line's fees reach the rating as a ``FeeTally``: the exact total of every event's fee, the
event count, and the earliest events' fees in order (at least ``free_units`` of them, or all),
so that a period of a million events is billed without listing them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any, Final

from billing.core import money

MAX_RATE: Final = Decimal(100)
RATE_DECIMALS: Final = 4
_ZERO: Final = Decimal(0)


@dataclass(frozen=True)
class PercentagePrice:
    rate: Decimal  # percent, 0..100
    fixed_amount_per_event: int = 0  # minor units
    free_units: int | None = None
    minimum_per_event: int | None = None
    maximum_per_event: int | None = None


def fee(value: Decimal, price: PercentagePrice, currency: str) -> Decimal:
    """One event's fee, exact, in minor units."""
    context = money._exact_context()
    share = context.multiply(value, price.rate).scaleb(money.exponent(currency) - 2, context=context)
    exact = context.add(share, Decimal(price.fixed_amount_per_event))
    if price.minimum_per_event is not None and exact < price.minimum_per_event:
        return Decimal(price.minimum_per_event)
    if price.maximum_per_event is not None and exact > price.maximum_per_event:
        return Decimal(price.maximum_per_event)
    return exact


def line_amount(fees_in_timestamp_order: Iterable[Decimal], free_units: int | None) -> int:
    """The line's amount: every fee but the first ``free_units``, summed exactly, rounded once."""
    paid = islice(fees_in_timestamp_order, free_units or 0, None)
    return int(money.round_half_up(money.exact_sum(paid), 0))


@dataclass(frozen=True)
class FeeTally:
    """The percentage fees of some events: what a line needs to be billed.

    ``earliest`` holds ``(order, fee)`` of the earliest events, sorted by ``order`` (any
    comparable, e.g. ``(timestamp, seq)``); it must hold at least ``free_units`` events, or all.
    """

    total: Decimal = _ZERO  # exact sum of every event's fee, minor units
    events: int = 0
    earliest: tuple[tuple[Any, Decimal], ...] = ()

    @classmethod
    def of(cls, ordered_fees: Iterable[tuple[Any, Decimal]]) -> FeeTally:
        """The tally of every event, given as ``(order, fee)`` in order."""
        listed = tuple(ordered_fees)
        return cls(money.exact_sum(f for _, f in listed), len(listed), listed)

    def merge(self, other: FeeTally) -> FeeTally:
        """Both tallies as one line's; ``earliest`` interleaved by order."""
        earliest = tuple(heapq.merge(self.earliest, other.earliest, key=lambda item: item[0]))
        return FeeTally(money.exact_add(self.total, other.total), self.events + other.events, earliest)

    def amount(self, free_units: int | None) -> int:
        free = min(free_units or 0, self.events)
        if len(self.earliest) < free:
            raise ValueError(f"the {free} free events are not all among the {len(self.earliest)} listed")
        waived = money.exact_sum(f for _, f in self.earliest[:free])
        return int(money.round_half_up(money.exact_add(self.total, -waived), 0))


def parse_rate(text: str | int) -> Decimal:
    """The rate in canonical form, or ``money.InvalidDecimal``."""
    rate = money.parse_decimal(text, max_fraction_digits=RATE_DECIMALS)
    if not _ZERO <= rate <= MAX_RATE:
        raise money.InvalidDecimal("must be between 0 and 100", value=str(text))
    return rate


def label(price: PercentagePrice, currency: str, unit: str | None) -> str:
    """``2.9% + 0.30 per payment``: the rate a line's description names."""
    text = f"{money.format_decimal(price.rate)}%"
    if price.fixed_amount_per_event:
        fixed = money.from_minor_units(price.fixed_amount_per_event, currency)
        text += f" + {fixed:f} per {unit or 'event'}"
    return text
