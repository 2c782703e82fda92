"""Subscription verbs; a session is the first argument, no HTTP in here.

A customer has at most one subscription at any instant, so that every usage event belongs to
exactly one subscription period and so to exactly one invoice. Periods are calendar months in
the timezone fixed at creation (the customer's, else the tenant's billing_timezone).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.clock import ensure_utc, format_timestamp
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.models import Customer
from billing.customers.service import get_customer
from billing.invoicing import periods
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.plans import get_plan
from billing.invoicing.schemas import Labels, SubscriptionCreate, SubscriptionOut, subscription_out
from billing.tenants.service import get_tenant


async def create_subscription(
    session: AsyncSession, tenant_id: str, data: SubscriptionCreate, *, now: datetime
) -> Subscription:
    customer = await get_customer(session, tenant_id, data.customer)
    plan = await get_plan(session, tenant_id, data.plan)
    if plan.currency != customer.currency:
        raise ValidationFailed.field(
            "plan", f"plan '{plan.code}' bills in {plan.currency}; the customer pays in {customer.currency}"
        )
    starts_at = ensure_utc(data.starts_at) if data.starts_at else now
    await _lock_customer(session, customer.id)
    await _refuse_overlap(session, customer.id, starts_at)
    timezone = customer.timezone or (await get_tenant(session, tenant_id)).billing_timezone
    first = periods.first_period(starts_at, None, timezone)
    subscription = Subscription(
        id=new_id("sub"),
        tenant_id=tenant_id,
        customer_id=customer.id,
        plan_id=plan.id,
        timezone=timezone,
        starts_at=starts_at,
        next_period_end=first.end if first else None,
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    await session.flush()
    return subscription


async def _lock_customer(session: AsyncSession, customer_id: str) -> None:
    """Serialise subscription changes per customer, so that two overlapping ones cannot both pass."""
    await session.execute(sa.select(Customer.id).where(Customer.id == customer_id).with_for_update())


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
    session: AsyncSession, tenant_id: str, page: PageRequest, *, customer_id: str | None = None
) -> tuple[list[Subscription], bool]:
    stmt = sa.select(Subscription).where(Subscription.tenant_id == tenant_id)
    if customer_id is not None:
        stmt = stmt.where(Subscription.customer_id == customer_id)
    return await fetch_page(session, stmt, Subscription.id, page)


async def cancel_subscription(
    session: AsyncSession, subscription: Subscription, at: datetime | None, *, now: datetime
) -> Subscription:
    """End the subscription at ``at`` (now when None); its last period ends there."""
    cancel_at = ensure_utc(at) if at else now
    if status(subscription, now) == "canceled":
        raise Conflict(f"Subscription {subscription.id} has already ended", code="invalid_transition")
    if cancel_at < now:
        raise ValidationFailed.field("at", "must not be in the past")
    if subscription.billed_through is not None and cancel_at < subscription.billed_through:
        raise Conflict(
            f"The period up to {subscription.billed_through.isoformat()} is already invoiced",
            code="invalid_transition",
        )
    cancel_at = max(cancel_at, subscription.starts_at)
    await _lock_customer(session, subscription.customer_id)
    await _refuse_later_overlap(session, subscription, cancel_at)
    subscription.cancel_at = cancel_at
    subscription.canceled_at = now
    subscription.next_period_end = next_period_end(subscription)
    subscription.updated_at = now
    await session.flush()
    return subscription


async def _refuse_later_overlap(
    session: AsyncSession, subscription: Subscription, cancel_at: datetime
) -> None:
    """Moving an end later must not run into the customer's next subscription."""
    clash = await session.scalar(
        sa.select(Subscription.id)
        .where(
            Subscription.customer_id == subscription.customer_id,
            Subscription.id != subscription.id,
            _effective(),
            Subscription.starts_at >= subscription.starts_at,
            Subscription.starts_at < cancel_at,
        )
        .limit(1)
    )
    if clash is not None:
        raise _overlap(clash, cancel_at)


def next_period_end(subscription: Subscription) -> datetime | None:
    """End of the first period not yet closed into an invoice; None when none is left."""
    period = upcoming_period(subscription)
    return period.end if period else None


def upcoming_period(subscription: Subscription) -> periods.Period | None:
    """The first period not yet closed into an invoice."""
    if subscription.billed_through is None:
        return periods.first_period(subscription.starts_at, subscription.cancel_at, subscription.timezone)
    return periods.period_containing(
        subscription.starts_at,
        subscription.cancel_at,
        subscription.timezone,
        subscription.billed_through,
    )


def status(subscription: Subscription, now: datetime) -> str:
    cancel_at = subscription.cancel_at
    if cancel_at is not None and (cancel_at <= now or cancel_at <= subscription.starts_at):
        return "canceled"
    return "scheduled" if subscription.starts_at > now else "active"


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
    """The wire shape as of ``now``, with the customers' external ids and the plans' codes in one query."""
    by_id = await labels(session, subscriptions)
    return [
        subscription_out(
            sub,
            by_id[sub.id],
            status(sub, now),
            periods.period_containing(sub.starts_at, sub.cancel_at, sub.timezone, now),
        )
        for sub in subscriptions
    ]
