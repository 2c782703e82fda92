"""The billing period an alert watches for a customer: the period of the subscription in effect,
reaching back over plan changes, which hand over mid-period without restarting it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import periods, schedule
from billing.invoicing.models import Subscription

_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True)
class Piece:
    """The part of the watched period one subscription covers."""

    subscription: Subscription
    period: periods.Period


@dataclass(frozen=True)
class Watched:
    period: periods.Period
    pieces: list[Piece]  # in time order; more than one after a plan change "now"


async def current_period(
    session: AsyncSession, tenant_id: str, customer_id: str, at: datetime
) -> Watched | None:
    """The customer's billing period holding ``at``; None when no subscription is in effect then."""
    subscriptions = {
        sub.id: sub
        for sub in await session.scalars(
            sa.select(Subscription).where(
                Subscription.tenant_id == tenant_id, Subscription.customer_id == customer_id
            )
        )
    }
    current = _in_effect(list(subscriptions.values()), at)
    if current is None:
        return None
    pieces = [current]
    while (earlier := _handed_over_from(pieces[0], subscriptions)) is not None:
        pieces.insert(0, earlier)
    return Watched(periods.Period(pieces[0].period.start, pieces[-1].period.end), pieces)


def _in_effect(subscriptions: list[Subscription], at: datetime) -> Piece | None:
    for sub in sorted(subscriptions, key=lambda s: s.starts_at):
        period = schedule.period_at(sub, at)
        if period is not None:
            return Piece(sub, period)
    return None


def _handed_over_from(piece: Piece, subscriptions: dict[str, Subscription]) -> Piece | None:
    """The predecessor's piece of the same period, when ``piece`` starts at a plan change."""
    sub = piece.subscription
    predecessor = subscriptions.get(sub.replaces or "")
    if predecessor is None or piece.period.start != sub.starts_at or predecessor.cancel_at != sub.starts_at:
        return None
    period = schedule.period_at(predecessor, sub.starts_at - _INSTANT)
    if period is None or period.end != sub.starts_at:
        return None
    return Piece(predecessor, period)
