"""Archiving a customer, as Stripe's delete but keeping the history.

Everything the customer has running ends in the archiving transaction: its subscriptions are
cancelled now, each last period closed at once into a final invoice, and its discount ends
(those final invoices still have it, their periods having begun before); invoices
already open stay collectible (charges, dunning and payments carry on). From then on ingestion
rejects the customer's events; one accepted while the archive commits is billed as late usage,
like any event for a period already closed.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.customers.archived import mark_archived
from billing.customers.models import Customer
from billing.customers.ports import Summaries
from billing.customers.service import lock_customer
from billing.invoicing import schedule
from billing.invoicing.changes import Clock, cancel
from billing.invoicing.discounts import end_discounts
from billing.invoicing.models import InvoiceItem, Subscription
from billing.invoicing.schemas import CancelIn


async def archive_customer(
    session: AsyncSession, customer: Customer, *, now: datetime, summaries: Summaries
) -> Customer:
    """Archive the customer in the caller's transaction; an archived one is left as it is.

    ``summaries`` fills in the customer's open dunning case in the ``customer.archived`` event.
    """
    await lock_customer(session, customer)
    if customer.archived_at is not None:
        return customer
    await delete_pending_items(session, customer, now=now)
    await cancel_subscriptions(session, customer, now=now)
    await end_discounts(session, customer, now=now)
    await mark_archived(session, customer, now=now, summaries=summaries)
    return customer


async def cancel_subscriptions(session: AsyncSession, customer: Customer, *, now: datetime) -> int:
    """Cancel now every subscription of the customer that has not ended, scheduled ones included
    (they then never start); return how many."""
    query = (
        sa.select(Subscription)
        .where(
            Subscription.tenant_id == customer.tenant_id,
            Subscription.customer_id == customer.id,
            sa.or_(Subscription.cancel_at.is_(None), Subscription.cancel_at > now),
        )
        .order_by(Subscription.id)
        .with_for_update()
    )
    running = [
        sub
        for sub in await session.scalars(query)
        if not schedule.has_ended(sub, now) and not _waits_for_predecessor(sub, now)
    ]
    for subscription in running:
        await cancel(session, subscription, CancelIn(when="now"), Clock(now, actor="archive"))
    return len(running)


def _waits_for_predecessor(sub: Subscription, now: datetime) -> bool:
    """A plan change waiting for the period end: canceling its predecessor removes it."""
    return sub.replaces is not None and sub.starts_at > now


async def delete_pending_items(session: AsyncSession, customer: Customer, *, now: datetime) -> None:
    """Pending invoice items go first, so that the final invoices carry none (as Stripe)."""
    await session.execute(
        sa.update(InvoiceItem)
        .where(InvoiceItem.customer_id == customer.id, InvoiceItem.status == "pending")
        .values(status="deleted", deleted_at=now, updated_at=now)
    )
