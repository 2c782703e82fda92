"""Changing a running subscription: plan and seats (now, backdated or at period end), cancel,
trial end, and undoing what waits for the period end.

A plan change "now" at T ends the subscription at T (``replaced``) and starts its successor at T,
so every event belongs to exactly one of them by its timestamp, and [S, T) is closed at once into
a ``subscription_update`` draft. A change at period end does the same at the period's end,
without proration: the successor exists from the start, ``scheduled``, and is the subscription's
``pending_change``. A seat change keeps the subscription and adds a quantity segment.

Callers lock the subscription row first (``get_subscription(..., lock=True)``) and the customer
row is locked as for any subscription change, so two concurrent changes take turns and the second
sees the first's result (409), never two closing invoices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.clock import ensure_utc, format_timestamp, parse_timestamp
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.customers.models import Customer
from billing.customers.service import lock_customer
from billing.invoicing import schedule
from billing.invoicing.close import close_periods
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import MAX_TRIAL_DAYS, get_plan
from billing.invoicing.run_tallies import RunTallies
from billing.invoicing.schemas import CancelIn, SubscriptionPatch
from billing.invoicing.subscriptions import (
    check_quantity,
    emit,
    get_subscription,
    new_subscription,
    refuse_overlap_after,
)
from billing.tenants.service import get_tenant

CHANGEABLE = ("trialing", "active", "past_due")


@dataclass(frozen=True)
class Clock:
    """The instant of the request and whether instants after it are allowed (time travel)."""

    now: datetime
    allow_future: bool = False
    actor: str = "api"


async def change(
    session: AsyncSession, sub: Subscription, patch: SubscriptionPatch, clock: Clock
) -> Subscription:
    """Apply ``patch`` to the (locked) subscription; return the subscription in force afterwards."""
    now = clock.now
    await lock_customer(session, await session.get_one(Customer, sub.customer_id))
    changed = False
    if patch.metadata is not UNSET:
        sub.metadata_ = validation.validate_metadata("metadata", patch.metadata)
        changed = True
    if patch.cancel_at_period_end is not UNSET:
        changed = await _set_cancel_at_period_end(session, sub, patch.cancel_at_period_end, now) or changed
    if patch.trial_end is not UNSET:
        _move_trial_end(sub, patch.trial_end, now)
        changed = True
    result = sub
    plan = await _new_plan(session, sub, patch)
    quantity = None if patch.quantity is UNSET else patch.quantity
    if plan is not None or (quantity is not None and quantity != schedule.quantity_at(sub, now)):
        result = await _change_plan_or_seats(session, sub, plan, quantity, patch.when, clock)
    elif not changed:
        raise ValidationFailed("Nothing to change: the subscription already has this plan and quantity")
    sub.updated_at = now
    await session.flush()
    if result is sub:
        await emit(session, sub, "subscription.updated", now)
    return result


async def _new_plan(session: AsyncSession, sub: Subscription, patch: SubscriptionPatch) -> Plan | None:
    if patch.plan is UNSET:
        return None
    plan = await get_plan(session, sub.tenant_id, patch.plan)
    if plan.id == sub.plan_id:
        return None
    current = await session.get(Plan, sub.plan_id)
    if current is not None and plan.currency != current.currency:
        raise ValidationFailed(
            f"Plan '{plan.code}' bills in {plan.currency}; the subscription bills in {current.currency}",
            code="currency_mismatch",
        )
    return plan


async def _change_plan_or_seats(
    session: AsyncSession, sub: Subscription, plan: Plan | None, quantity: int | None, when: str, clock: Clock
) -> Subscription:
    now = clock.now
    if quantity is not None:
        check_quantity(quantity)
    state = schedule.status(sub, now)
    if state == "scheduled":
        return _change_in_place(sub, plan, quantity)
    if state not in CHANGEABLE:
        raise Conflict(
            f"Subscription {sub.id} is {state}; only a running one changes", code="invalid_transition"
        )
    _refuse_pending(sub, now)
    if when == "period_end":
        at = _current_period(sub, now).end
        if plan is None:
            sub.quantities = schedule.with_segment(sub, at, quantity or schedule.quantity_at(sub, now))
        else:
            await _hand_over(session, sub, plan, quantity, at, clock, reason=None)
        # Until the period ends the subscription in force is this one, showing its pending_change.
        return sub
    at = _instant(sub, when, clock)
    if plan is None:
        sub.quantities = schedule.with_segment(sub, at, quantity or schedule.quantity_at(sub, at))
        return sub
    return await _hand_over(session, sub, plan, quantity, at, clock, reason="subscription_update")


def _change_in_place(sub: Subscription, plan: Plan | None, quantity: int | None) -> Subscription:
    """A subscription that has not started bills nothing yet: it simply becomes the new one."""
    if plan is not None:
        sub.plan_id = plan.id
    if quantity is not None:
        sub.quantities = schedule.with_segment(sub, sub.starts_at, quantity)
    return sub


def _refuse_pending(sub: Subscription, now: datetime) -> None:
    if sub.replaced_by is not None or schedule.pending_quantity(sub, now) is not None:
        raise Conflict(
            f"Subscription {sub.id} already has a change at period end; delete it first",
            code="pending_change_exists",
        )
    if sub.end_reason == "canceled":
        raise Conflict(
            f"Subscription {sub.id} is canceled at {sub.cancel_at}; undo that first",
            code="invalid_transition",
        )


def _current_period(sub: Subscription, now: datetime) -> schedule.periods.Period:
    period = schedule.period_at(sub, now)
    if period is None:
        raise Conflict(f"Subscription {sub.id} has no period in effect now", code="invalid_transition")
    return period


def _instant(sub: Subscription, when: str, clock: Clock) -> datetime:
    """T of a change "now" or backdated: inside the subscription's earliest period not yet closed."""
    if when == "now":
        # "now" may come after a period end the billing run has not closed yet: the periods
        # before are closed with the change, so any instant from the first unclosed one on works.
        at = clock.now.replace(microsecond=0)
        if (sub.billed_through is not None and at < sub.billed_through) or schedule.period_at(
            sub, at
        ) is None:
            raise Conflict(f"Subscription {sub.id} has no period in effect now", code="invalid_transition")
        return max(at, sub.starts_at)
    try:
        at = parse_timestamp(when)
    except ValueError:
        raise ValidationFailed.field("when", "must be 'now', 'period_end' or an RFC 3339 instant") from None
    if at.microsecond:
        raise ValidationFailed.field("when", "must be a whole second")
    if at > clock.now and not clock.allow_future:
        raise ValidationFailed.field("when", "must not be in the future")
    period = schedule.upcoming_period(sub)
    if period is None or not period.start <= at < period.end:
        raise ValidationFailed.field("when", "must fall inside the subscription's current period")
    return max(at, sub.starts_at)


async def _hand_over(
    session: AsyncSession,
    sub: Subscription,
    plan: Plan,
    quantity: int | None,
    at: datetime,
    clock: Clock,
    *,
    reason: str | None,
) -> Subscription:
    """End ``sub`` at ``at`` in favour of a new subscription on ``plan``; close what ended."""
    successor = new_subscription(
        sub.tenant_id,
        sub.customer_id,
        plan.id,
        sub.timezone,
        at,
        quantity=quantity or schedule.quantity_at(sub, at),
        # A plan change in a trial keeps the trial's end (as Stripe).
        trial_end=sub.trial_end if sub.trial_end is not None and sub.trial_end > at else None,
        metadata=dict(sub.metadata_ or {}),
        now=clock.now,
        replaces=sub.id,
    )
    successor.trial_notice_for = sub.trial_notice_for
    sub.cancel_at = at
    sub.end_reason = "replaced"
    sub.replaced_by = successor.id
    sub.close_reason = reason
    sub.next_period_end = schedule.next_period_end(sub)
    sub.updated_at = clock.now
    session.add(successor)
    await session.flush()
    await emit(session, successor, "subscription.created", clock.now)
    await _close_now(session, sub, clock)
    return successor


async def _close_now(session: AsyncSession, sub: Subscription, clock: Clock) -> None:
    """Close the periods that have ended by now (the one cut short included) into drafts.

    Closing the last period announces the end (``subscription.canceled`` / ``.ended``). An end
    at the start of the first unclosed period (or of the subscription) leaves none to close, so
    it is announced here."""
    nothing_left = sub.cancel_at is not None and sub.cancel_at <= (sub.billed_through or sub.starts_at)
    tenant = await get_tenant(session, sub.tenant_id)
    tallies = RunTallies(clock.now, tenant_wide=False)  # one subscription: its customer's rows only
    await close_periods(session, tenant, [sub], at=clock.now, actor=clock.actor, tallies=tallies)
    if nothing_left and schedule.has_ended(sub, clock.now):
        topic = "subscription.ended" if sub.end_reason == "replaced" else "subscription.canceled"
        await emit(session, sub, topic, clock.now)


async def cancel(session: AsyncSession, sub: Subscription, data: CancelIn, clock: Clock) -> Subscription:
    """Cancel now (closing the last period at once), at period end, or at an instant (``at``)."""
    now = clock.now
    if data.when is not UNSET and data.at is not UNSET:
        raise ValidationFailed("Give either 'when' or 'at', not both")
    state = schedule.status(sub, now)
    if state in ("canceled", "ended"):
        raise Conflict(f"Subscription {sub.id} has already ended", code="invalid_transition")
    if state == "scheduled" and sub.replaces is not None:
        raise Conflict(
            f"Subscription {sub.id} is the pending change of {sub.replaces}:"
            f" DELETE /v1/subscriptions/{sub.replaces}/pending-change drops it",
            code="invalid_transition",
        )
    await lock_customer(session, await session.get_one(Customer, sub.customer_id))
    if data.when == "period_end":
        if sub.replaced_by is not None:
            raise Conflict(
                f"Subscription {sub.id} has a plan change at period end", code="invalid_transition"
            )
        at = sub.starts_at if state == "scheduled" else _current_period(sub, now).end
        _end(sub, at, now, reason=None)
        sub.cancel_at_period_end = True
        await session.flush()
        # A scheduled subscription canceled at period end never starts: it ends here.
        await emit(
            session,
            sub,
            "subscription.canceled" if schedule.has_ended(sub, now) else "subscription.updated",
            now,
        )
        return sub
    await _drop_pending_successor(session, sub)
    at = await _cancel_instant(session, sub, None if data.at is UNSET else data.at, now)
    _end(sub, max(at, sub.starts_at), now, reason="subscription_cancel")
    await session.flush()
    await _close_now(session, sub, clock)
    if not schedule.has_ended(sub, now):
        await emit(session, sub, "subscription.updated", now)
    return sub


async def _cancel_instant(
    session: AsyncSession, sub: Subscription, at: datetime | None, now: datetime
) -> datetime:
    if at is None:
        at = now.replace(microsecond=0)
    elif ensure_utc(at) < now:
        raise ValidationFailed.field("at", "must not be in the past")
    at = ensure_utc(at)
    if sub.billed_through is not None and at < sub.billed_through:
        raise Conflict(
            f"The period up to {format_timestamp(sub.billed_through)} is already invoiced",
            code="invalid_transition",
        )
    await refuse_overlap_after(session, sub, at)
    return at


def _end(sub: Subscription, at: datetime, now: datetime, *, reason: str | None) -> None:
    sub.cancel_at = at
    sub.end_reason = "canceled"
    sub.canceled_at = now
    sub.close_reason = reason
    sub.cancel_at_period_end = False
    sub.next_period_end = schedule.next_period_end(sub)
    sub.updated_at = now


async def _set_cancel_at_period_end(
    session: AsyncSession, sub: Subscription, value: bool, now: datetime
) -> bool:
    if value:
        if sub.cancel_at_period_end:
            return False
        raise ValidationFailed.field("cancel_at_period_end", "use POST /cancel with when=period_end")
    if not sub.cancel_at_period_end or schedule.has_ended(sub, now):
        return False
    await refuse_overlap_after(session, sub, None)
    sub.cancel_at = sub.end_reason = sub.canceled_at = sub.close_reason = None
    sub.cancel_at_period_end = False
    sub.next_period_end = schedule.next_period_end(sub)
    return True


def _move_trial_end(sub: Subscription, value: str, now: datetime) -> None:
    if schedule.status(sub, now) not in ("trialing", "scheduled") or sub.trial_end is None:
        raise Conflict(f"Subscription {sub.id} is not in a trial", code="invalid_transition")
    if value == "now":
        at = max(now.replace(microsecond=0), sub.starts_at)
    else:
        try:
            at = parse_timestamp(value)
        except ValueError:
            raise ValidationFailed.field("trial_end", "must be 'now' or an RFC 3339 instant") from None
        if at <= now:
            raise ValidationFailed.field("trial_end", "must be in the future ('now' ends the trial)")
        if (at - sub.starts_at).days > MAX_TRIAL_DAYS:
            raise ValidationFailed.field("trial_end", f"a trial lasts at most {MAX_TRIAL_DAYS} days")
    if sub.billed_through is not None and at < sub.billed_through:
        raise Conflict("The trial's periods up to then are already invoiced", code="invalid_transition")
    sub.trial_end = at
    sub.trial_notice_for = None
    sub.next_period_end = schedule.next_period_end(sub)


async def delete_pending_change(session: AsyncSession, sub: Subscription, now: datetime) -> Subscription:
    await lock_customer(session, await session.get_one(Customer, sub.customer_id))
    if sub.replaced_by is not None and sub.cancel_at is not None and sub.cancel_at > now:
        await _drop_pending_successor(session, sub)
        sub.cancel_at = sub.end_reason = sub.close_reason = None
        sub.next_period_end = schedule.next_period_end(sub)
    elif schedule.pending_quantity(sub, now) is not None:
        sub.quantities = [s for s in sub.quantities if parse_timestamp(s["from"]) <= now] or sub.quantities[
            :1
        ]
    else:
        raise NotFound(f"Subscription {sub.id} has no pending change")
    sub.updated_at = now
    await session.flush()
    await emit(session, sub, "subscription.updated", now)
    return sub


async def _drop_pending_successor(session: AsyncSession, sub: Subscription) -> None:
    """A successor waiting for the period end never started: it goes, as if never asked for."""
    if sub.replaced_by is None:
        return
    successor = await get_subscription(session, sub.tenant_id, sub.replaced_by, lock=True)
    await session.execute(sa.delete(Subscription).where(Subscription.id == successor.id))
    sub.replaced_by = None
