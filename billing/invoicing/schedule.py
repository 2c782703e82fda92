"""A subscription over time: its periods, its seats per instant and its status; pure, no session.

Periods are calendar months in the subscription's timezone (``periods``), cut at ``trial_end`` so
that no period is part trial and part paid, and ending at ``cancel_at`` (a cancel, or the instant
a plan change hands over to the next subscription). Seats are a list of segments
``[{"from", "quantity"}]``; a period's base fee is prorated per segment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from billing.core.clock import format_timestamp, parse_timestamp
from billing.invoicing import periods
from billing.invoicing.models import Subscription


def period_at(sub: Subscription, at: datetime) -> periods.Period | None:
    """The period that holds ``at``; None outside the subscription."""
    return periods.period_containing(sub.starts_at, sub.cancel_at, sub.timezone, at, split=sub.trial_end)


def upcoming_period(sub: Subscription) -> periods.Period | None:
    """The first period not yet closed into an invoice; None once the last one is closed."""
    if sub.billed_through is None:
        return periods.first_period(sub.starts_at, sub.cancel_at, sub.timezone, split=sub.trial_end)
    return period_at(sub, sub.billed_through)


def next_period_end(sub: Subscription) -> datetime | None:
    period = upcoming_period(sub)
    return period.end if period else None


def ended_periods(sub: Subscription, until: datetime) -> list[periods.Period]:
    """The periods not yet closed that have ended by ``until``, in order."""
    return periods.ended_periods(
        sub.starts_at, sub.cancel_at, sub.timezone, after=sub.billed_through, until=until, split=sub.trial_end
    )


def billing_reason(sub: Subscription, period: periods.Period) -> str:
    """A period cut short by a change "now" closes into a subscription_update or
    subscription_cancel invoice; every other period into a subscription_cycle one."""
    if sub.close_reason is not None and period.end == sub.cancel_at:
        return sub.close_reason
    return "subscription_cycle"


def in_trial(sub: Subscription, period: periods.Period) -> bool:
    return sub.trial_end is not None and period.end <= sub.trial_end


@dataclass(frozen=True)
class Seats:
    period: periods.Period
    quantity: int


def segments(sub: Subscription) -> list[tuple[datetime, int]]:
    """(from, quantity) in time order; a subscription from before seats existed has one seat."""
    stored = [(parse_timestamp(s["from"]), int(s["quantity"])) for s in sub.quantities or []]
    return stored or [(sub.starts_at, 1)]


def quantity_at(sub: Subscription, at: datetime) -> int:
    return _quantity_at(segments(sub), at)


def _quantity_at(stored: list[tuple[datetime, int]], at: datetime) -> int:
    current = stored[0][1]
    for start, quantity in stored:
        if start <= at:
            current = quantity
    return current


def seats_in(sub: Subscription, period: periods.Period) -> list[Seats]:
    """The period cut where the quantity changes, each piece with its quantity (adjacent pieces of
    equal quantity are one)."""
    stored = segments(sub)
    cuts = [start for start, _ in stored if period.start < start < period.end]
    edges = [period.start, *cuts, period.end]
    pieces: list[Seats] = []
    for start, end in itertools.pairwise(edges):
        quantity = _quantity_at(stored, start)
        if pieces and pieces[-1].quantity == quantity:
            pieces[-1] = Seats(periods.Period(pieces[-1].period.start, end), quantity)
        else:
            pieces.append(Seats(periods.Period(start, end), quantity))
    return pieces


def with_segment(sub: Subscription, at: datetime, quantity: int) -> list[dict[str, object]]:
    """The seat segments with ``quantity`` from ``at`` on (later segments are dropped)."""
    kept = [(start, q) for start, q in segments(sub) if start < at]
    return [{"from": format_timestamp(start), "quantity": q} for start, q in [*kept, (at, quantity)]]


def pending_quantity(sub: Subscription, now: datetime) -> tuple[datetime, int] | None:
    """A quantity change set for a later instant (a change at period end), if any."""
    later = [(start, q) for start, q in segments(sub) if start > now and start > sub.starts_at]
    return later[-1] if later else None


def has_ended(sub: Subscription, now: datetime) -> bool:
    end = sub.cancel_at
    return end is not None and (end <= now or end <= sub.starts_at)


def status(sub: Subscription, now: datetime) -> str:
    if has_ended(sub, now):
        return "ended" if sub.end_reason == "replaced" else "canceled"
    if sub.starts_at > now:
        return "scheduled"
    if sub.trial_end is not None and now < sub.trial_end:
        return "trialing"
    return "past_due" if sub.past_due else "active"
