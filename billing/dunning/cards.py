"""Card lifecycle notices: a card about to expire, a card removed.

Stripe reports both for legacy cards and sources (see billing/stripe_events); an hourly scan of
the cards customers have on file covers PaymentMethod cards, which Stripe never reports as
expiring. Each notice is queued once per card and expiry month (expiring) or per card (removed),
whatever the number of events or scans that find it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.customers.models import Customer
from billing.dunning.policy import get_policy
from billing.notifications.queue import queue_notification


def _card(payload: dict[str, Any]) -> dict[str, Any]:
    card = payload.get("card") or {}
    return {key: card.get(key) for key in ("id", "brand", "last4", "exp_month", "exp_year")}


async def on_card_expiring(ctx: AppContext, message: Message) -> None:
    card = _card(dict(message.payload))
    if not card["id"] or not card["exp_year"] or not card["exp_month"]:
        return
    async with ctx.database.transaction() as session:
        customer = await session.get(Customer, message.payload["customer_id"])
        if customer is not None and (await get_policy(session, customer.tenant_id)).expiring_card_notice:
            await card_expiring(session, customer, card, at=message.created_at)


async def card_expiring(
    session: AsyncSession, customer: Customer, card: dict[str, Any], *, at: datetime
) -> bool:
    """Queue the expiry notice of ``card``; once per card and expiry month, whoever reports it."""
    month = f"{int(card['exp_year']):04d}-{int(card['exp_month']):02d}"
    return await queue_notification(
        session,
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        kind="card_expiring",
        dedupe_key=f"card_expiring:{customer.id}:{card['id']}:{month}",
        data={"card": card},
        at=at,
    )


async def scan_expiring_cards(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """Notify customers whose stored card expires at the end of this month or the next: Stripe
    never reports PaymentMethod cards as expiring. Tenants whose policy turns notices off are skipped."""
    month = at.year * 12 + at.month - 1
    expiry = Customer.card_exp_year * 12 + Customer.card_exp_month - 1
    query = sa.select(Customer).where(Customer.card_id.is_not(None), expiry.in_((month, month + 1)))
    if tenant_id is not None:
        query = query.where(Customer.tenant_id == tenant_id)
    queued = 0
    async with ctx.database.transaction() as session:
        policies: dict[str, bool] = {}
        for customer in await session.scalars(query.order_by(Customer.id)):
            if customer.tenant_id not in policies:
                policies[customer.tenant_id] = (
                    await get_policy(session, customer.tenant_id)
                ).expiring_card_notice
            if policies[customer.tenant_id]:
                queued += await card_expiring(session, customer, _stored_card(customer), at=at)
    return queued


def _stored_card(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.card_id,
        "brand": customer.card_brand,
        "last4": customer.card_last4,
        "exp_month": customer.card_exp_month,
        "exp_year": customer.card_exp_year,
    }


async def on_card_removed(ctx: AppContext, message: Message) -> None:
    card = _card(dict(message.payload))
    if not card["id"]:
        return
    async with ctx.database.transaction() as session:
        customer = await session.get(Customer, message.payload["customer_id"])
        if customer is None:
            return
        await queue_notification(
            session,
            tenant_id=customer.tenant_id,
            customer_id=customer.id,
            kind="card_removed",
            dedupe_key=f"card_removed:{customer.id}:{card['id']}",
            data={"card": card},
            at=message.created_at,
        )
