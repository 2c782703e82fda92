"""Subscription verbs; a session is the first argument, no HTTP in here.

A customer has at most one subscription at any instant, so that every usage event belongs to
exactly one subscription period and so to exactly one invoice. Periods are calendar months in
the timezone fixed at creation (the customer's, else the tenant's billing_timezone).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox, validation
from billing.core.clock import ensure_utc, format_timestamp
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.archived import ensure_not_archived
from billing.customers.models import Customer
from billing.customers.service import get_customer, lock_customer
from billing.invoicing import schedule, trials
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import MAX_TRIAL_DAYS, get_plan
from billing.invoicing.schemas import (
    Labels,
    PendingChangeOut,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionState,
    subscription_out,
)
from billing.tenants.service import get_tenant


async def create_subscription(
    session: AsyncSession, tenant_id: str, data: SubscriptionCreate, *, now: datetime
) -> Subscription:
    # Locked first: subscription changes of a customer, and an archive, take turns on its row.
    customer = await lock_customer(session, await get_customer(session, tenant_id, data.customer))
    ensure_not_archived(customer)
    plan = await get_plan(session, tenant_id, data.plan)
    if plan.currency != customer.currency:
        raise ValidationFailed.field(
            "plan", f"plan '{plan.code}' bills in {plan.currency}; the customer pays in {customer.currency}"
        )
    check_quantity(data.quantity)
    trial_days = plan.trial_days if data.trial_days is None else data.trial_days
    if not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise ValidationFailed.field("trial_days", f"must be between 0 and {MAX_TRIAL_DAYS}")
    validation.validate_metadata("metadata", data.metadata)
    starts_at = ensure_utc(data.starts_at) if data.starts_at else now
    await _refuse_overlap(session, customer.id, starts_at)
    timezone = customer.timezone or (await get_tenant(session, tenant_id)).billing_timezone
    subscription = new_subscription(
        tenant_id,
        customer.id,
        plan.id,
        timezone,
        starts_at,
        quantity=data.quantity,
        trial_end=starts_at + timedelta(days=trial_days) if trial_days else None,
        metadata=data.metadata,
        now=now,
    )
    session.add(subscription)
    await session.flush()
    await emit(session, subscription, "subscription.created", now)
    await notify_trial_end(session, [subscription], now)  # a trial shorter than the notice: at once
    return subscription


async def notify_trial_end(session: AsyncSession, subs: Sequence[Subscription], at: datetime) -> int:
    """Announce the trial end of these (locked) subscriptions where it is due; return how many."""
    sent = 0
    for sub in subs:
        if trials.is_due(sub, at):
            sub.trial_notice_for = sub.trial_end
            await session.flush()
            await emit(session, sub, trials.TOPIC, at)
            sent += 1
    return sent


def new_subscription(
    tenant_id: str,
    customer_id: str,
    plan_id: str,
    timezone: str,
    starts_at: datetime,
    *,
    quantity: int,
    trial_end: datetime | None,
    metadata: dict[str, str],
    now: datetime,
    replaces: str | None = None,
) -> Subscription:
    subscription = Subscription(
        id=new_id("sub"),
        tenant_id=tenant_id,
        customer_id=customer_id,
        plan_id=plan_id,
        timezone=timezone,
        starts_at=starts_at,
        quantities=[{"from": format_timestamp(starts_at), "quantity": quantity}],
        metadata_=dict(metadata),
        trial_end=trial_end,
        cancel_at_period_end=False,
        past_due=False,
        replaces=replaces,
        created_at=now,
        updated_at=now,
    )
    subscription.next_period_end = schedule.next_period_end(subscription)
    return subscription


def check_quantity(quantity: int) -> None:
    if quantity < 1:
        raise ValidationFailed.field("quantity", "must be a whole number of at least 1")


async def emit(session: AsyncSession, subscription: Subscription, topic: str, now: datetime) -> None:
    """Record a subscription event carrying the subscription as the API shows it now."""
    (snapshot,) = await subscriptions_out(session, [subscription], now)
    await outbox.emit(
        session,
        tenant_id=subscription.tenant_id,
        topic=topic,
        payload={
            "subscription_id": subscription.id,
            "customer_id": subscription.customer_id,
            "object": msgspec.to_builtins(snapshot),
        },
        now=now,
    )


def _effective() -> sa.ColumnElement[bool]:
    """Subscriptions that cover any time at all (one canceled before it started covers none)."""
    return sa.or_(Subscription.cancel_at.is_(None), Subscription.cancel_at > Subscription.starts_at)


async def _refuse_overlap(session: AsyncSession, customer_id: str, starts_at: datetime) -> None:
    """A new, open-ended subscription from ``starts_at`` must not meet any other."""
    clash = await session.scalar(
        sa.select(Subscription.id)
        .where(
            Subscription.customer_id == customer_id,
            _effective(),
            sa.or_(Subscription.cancel_at.is_(None), Subscription.cancel_at > starts_at),
        )
        .limit(1)
    )
    if clash is not None:
        raise _overlap(clash, starts_at)


def _overlap(clash: str, at: datetime) -> Conflict:
    return Conflict(
        f"The customer's subscription {clash} covers {format_timestamp(at)} or later;"
        " a customer has one subscription at a time",
        code="subscription_overlap",
    )


async def get_subscription(
    session: AsyncSession, tenant_id: str, subscription_id: str, *, lock: bool = False
) -> Subscription:
    query = sa.select(Subscription).where(
        Subscription.tenant_id == tenant_id, Subscription.id == subscription_id
    )
    subscription = (await session.scalars(query.with_for_update() if lock else query)).first()
    if subscription is None:
        raise NotFound(f"No subscription {subscription_id}")
    return subscription


async def list_subscriptions(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    now: datetime,
    customer_id: str | None = None,
    status: str | None = None,
) -> tuple[list[Subscription], bool]:
    stmt = sa.select(Subscription).where(Subscription.tenant_id == tenant_id)
    if customer_id is not None:
        stmt = stmt.where(Subscription.customer_id == customer_id)
    if status is not None:
        stmt = stmt.where(_in_status(status, now))
    return await fetch_page(session, stmt, Subscription.id, page)


def _in_status(status: str, now: datetime) -> sa.ColumnElement[bool]:
    """``schedule.status`` as SQL, for the list filter."""
    sub = Subscription
    ended = sa.and_(sub.cancel_at.is_not(None), sa.or_(sub.cancel_at <= now, sub.cancel_at <= sub.starts_at))
    trialing = sa.and_(sub.trial_end.is_not(None), sub.trial_end > now)
    running = sa.and_(sa.not_(ended), sub.starts_at <= now)
    conditions = {
        "ended": sa.and_(ended, sub.end_reason == "replaced"),
        "canceled": sa.and_(ended, sa.or_(sub.end_reason.is_(None), sub.end_reason != "replaced")),
        "scheduled": sa.and_(sa.not_(ended), sub.starts_at > now),
        "trialing": sa.and_(running, trialing),
        "past_due": sa.and_(running, sa.not_(trialing), sub.past_due.is_(True)),
        "active": sa.and_(running, sa.not_(trialing), sub.past_due.is_(False)),
    }
    return conditions[status]


async def refuse_overlap_after(
    session: AsyncSession, subscription: Subscription, end: datetime | None
) -> None:
    """Moving an end later (None: no end) must not run into the customer's next subscription."""
    query = sa.select(Subscription.id).where(
        Subscription.customer_id == subscription.customer_id,
        Subscription.id != subscription.id,
        _effective(),
        Subscription.starts_at >= subscription.starts_at,
    )
    if end is not None:
        query = query.where(Subscription.starts_at < end)
    clash = await session.scalar(query.limit(1))
    if clash is not None:
        raise _overlap(clash, end or subscription.starts_at)


async def labels(session: AsyncSession, subscriptions: Iterable[Subscription]) -> dict[str, Labels]:
    subs = list(subscriptions)
    if not subs:
        return {}
    rows = await session.execute(
        sa.select(Subscription.id, Customer.external_id, Plan.code)
        .join(Customer, Customer.id == Subscription.customer_id)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.id.in_([s.id for s in subs]))
    )
    return {row.id: Labels(row.external_id, row.code) for row in rows}


async def subscriptions_out(
    session: AsyncSession, subscriptions: Sequence[Subscription], now: datetime
) -> list[SubscriptionOut]:
    """The wire shape as of ``now``, with the customers' external ids, the plans' codes and the
    plan changes waiting at period end read in one query each."""
    by_id = await labels(session, subscriptions)
    successors = await _successors(session, [s for s in subscriptions if _hands_over_later(s, now)])
    return [
        subscription_out(sub, by_id[sub.id], _state(sub, by_id[sub.id], now, successors.get(sub.id)))
        for sub in subscriptions
    ]


def _hands_over_later(sub: Subscription, now: datetime) -> bool:
    return sub.replaced_by is not None and sub.cancel_at is not None and sub.cancel_at > now


async def _successors(session: AsyncSession, subs: Sequence[Subscription]) -> dict[str, PendingChangeOut]:
    if not subs:
        return {}
    rows = await session.execute(
        sa.select(Subscription, Plan.code)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.id.in_([s.replaced_by for s in subs]))
    )
    by_id = {row[0].id: row for row in rows}
    found = {}
    for sub in subs:
        successor, code = by_id[sub.replaced_by or ""]
        found[sub.id] = PendingChangeOut(
            successor.plan_id, code, schedule.quantity_at(successor, successor.starts_at), successor.starts_at
        )
    return found


def _state(
    sub: Subscription, label: Labels, now: datetime, successor: PendingChangeOut | None
) -> SubscriptionState:
    ended_at = sub.cancel_at if schedule.has_ended(sub, now) else None
    return SubscriptionState(
        status=schedule.status(sub, now),
        current=schedule.period_at(sub, now),
        quantity=schedule.quantity_at(sub, now),
        ended_at=ended_at,
        pending_change=successor or _pending_quantity(sub, label, now),
    )


def _pending_quantity(sub: Subscription, label: Labels, now: datetime) -> PendingChangeOut | None:
    pending = schedule.pending_quantity(sub, now)
    if pending is None:
        return None
    effective_at, quantity = pending
    return PendingChangeOut(sub.plan_id, label.plan_code, quantity, effective_at)


async def set_past_due(session: AsyncSession, subscription_id: str, past_due: bool, *, at: datetime) -> None:
    """Dunning's word on the subscription: an invoice of it has an active case (or none has any
    longer). A change of status is a ``subscription.updated``."""
    subscription = await session.get(Subscription, subscription_id, with_for_update=True)
    if subscription is None or subscription.past_due == past_due:
        return
    subscription.past_due = past_due
    subscription.updated_at = at
    await session.flush()
    if not schedule.has_ended(subscription, at):
        await emit(session, subscription, "subscription.updated", at)
