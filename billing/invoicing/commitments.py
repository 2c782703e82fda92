"""Commitments as amounts: a price's floor and cap, and a plan's minimum per period (pure).

Every bound is prorated like the base fee (covered seconds / seconds of the calendar month, so
a full month is the bound itself) and rounded once, half up. Amounts are integer minor units.

**Price floor and cap.** The sum of a price's lines in a period is brought inside
``[floor, cap]`` by one line after them: ``price_minimum`` (positive, up to the floor) or
``price_maximum`` (negative, down to the cap). Floors apply only on the invoice that closes the
period; a mid-period (threshold) invoice passes ``floors=False`` and must count what earlier
invoices of the period billed, so that the cap holds across all of them.

Late usage of an invoiced period: the late line prices what the late events add at the
period's tiers; then one adjustment line makes the price's lines of that period, over every
invoice, sum to the bounded charge of its whole quantity now:
``adjustment = bounded(charge(now)) - (billed so far + late line)``. So the cap holds across
the period's lines, and a late line is netted against a floor top-up already billed: below the
floor the adjustment is exactly minus the late line; once past it, the earlier top-up is given
back (nobody pays both). Its kind is ``price_maximum`` when the cap binds, before or now, else
``price_minimum`` (then negative when it nets a top-up).

**Plan minimum.** What counts toward it is the period's ``base_fee``, ``usage`` and
``late_usage`` lines and its prices' ``price_minimum`` / ``price_maximum`` lines (a price's
floor and cap are part of what the price bills). Below ``floor``, a ``minimum_commitment`` line
adds the difference. A later late line of the period is followed by a ``minimum_commitment``
line that moves the commitment billed to what it must be now, ``max(floor - counted, 0)``;
for late usage (a positive late amount) that is ``-min(true-up left, late amount)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing.invoicing import periods

PRICE_MINIMUM, PRICE_MAXIMUM, MINIMUM_COMMITMENT = "price_minimum", "price_maximum", "minimum_commitment"
# The kinds of a period's lines that count toward the plan minimum.
COUNTED_KINDS = frozenset({"base_fee", "usage", "late_usage", PRICE_MINIMUM, PRICE_MAXIMUM})
# The kinds of a price's lines whose sum its floor and cap bound.
PRICE_KINDS = frozenset({"usage", "late_usage", PRICE_MINIMUM, PRICE_MAXIMUM})


@dataclass(frozen=True)
class Bounds:
    """A price's floor and cap for one period, prorated; None where the price has none."""

    minimum: int | None = None
    maximum: int | None = None

    def clamp(self, amount: int, *, floors: bool = True) -> int:
        if self.maximum is not None and amount > self.maximum:
            return self.maximum
        if floors and self.minimum is not None and amount < self.minimum:
            return self.minimum
        return amount

    @property
    def none(self) -> bool:
        return self.minimum is None and self.maximum is None


def prorated(amount: int | None, period: periods.Period, timezone: str) -> int | None:
    """``round(amount x covered seconds / M)``, half up; None stays None."""
    return None if amount is None else periods.prorated_fee(amount, period, timezone)


def price_bounds(stored: dict[str, Any], period: periods.Period, timezone: str) -> Bounds:
    """The stored price's floor and cap over ``period``."""
    return Bounds(
        prorated(stored.get("minimum_amount"), period, timezone),
        prorated(stored.get("maximum_amount"), period, timezone),
    )


def bound_adjustment(amount: int, bounds: Bounds, *, floors: bool = True) -> int:
    """What brings a price's line sum ``amount`` inside its bounds (0 when it is)."""
    return bounds.clamp(amount, floors=floors) - amount


def bound_kind(adjustment: int) -> str:
    return PRICE_MINIMUM if adjustment > 0 else PRICE_MAXIMUM


def late_bound_adjustment(charge_now: int, billed: int, late: int, bounds: Bounds) -> int:
    """After a late line of ``late``: the adjustment that makes the price's lines of the period
    (``billed`` on earlier invoices, then the late line) sum to the bounded charge of its
    quantity now (``charge_now``, unbounded)."""
    if bounds.none:
        return 0
    return bounds.clamp(charge_now) - (billed + late)


def late_bound_kind(charge_before: int, charge_now: int, bounds: Bounds) -> str:
    """``charge_before``: the unbounded charge of the quantity billed before the late line."""
    capped = bounds.maximum is not None and max(charge_before, charge_now) > bounds.maximum
    return PRICE_MAXIMUM if capped else PRICE_MINIMUM


def true_up(floor: int | None, counted: int) -> int:
    """The ``minimum_commitment`` a period owes on top of ``counted``: ``max(floor - counted, 0)``."""
    return 0 if floor is None else max(floor - counted, 0)


def commitment_netting(floor: int | None, counted: int, billed: int) -> int:
    """The ``minimum_commitment`` line after a late line: what moves the commitment ``billed`` so
    far for the period to the true-up it owes now that ``counted`` includes the late line."""
    return true_up(floor, counted) - billed
