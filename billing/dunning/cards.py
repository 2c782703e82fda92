"""Card lifecycle notices: a card about to expire, a card removed.

Stripe reports both for legacy cards and sources (see billing/stripe_events). Each notice is
queued once per card and expiry month (expiring) or per card (removed), whatever the number of
events that report it.
"""

from __future__ import annotations

from typing import Any

from billing.context import AppContext
from billing.dunning.policy import get_policy
from billing.metering.models import Customer
from billing.notifications.queue import queue_notification
from billing.outbox import Message


def _card(payload: dict[str, Any]) -> dict[str, Any]:
    card = payload.get("card") or {}
    return {key: card.get(key) for key in ("id", "brand", "last4", "exp_month", "exp_year")}


async def on_card_expiring(ctx: AppContext, message: Message) -> None:
    card = _card(dict(message.payload))
    if not card["id"] or not card["exp_year"] or not card["exp_month"]:
        return
    async with ctx.database.transaction() as session:
        customer = await session.get(Customer, message.payload["customer_id"])
        if customer is None or not (await get_policy(session, customer.tenant_id)).expiring_card_notice:
            return
        month = f"{int(card['exp_year']):04d}-{int(card['exp_month']):02d}"
        await queue_notification(
            session,
            tenant_id=customer.tenant_id,
            customer_id=customer.id,
            kind="card_expiring",
            dedupe_key=f"card_expiring:{customer.id}:{card['id']}:{month}",
            data={"card": card},
            at=message.created_at,
        )


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
