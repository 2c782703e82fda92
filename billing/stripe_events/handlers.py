"""What each Stripe event type does: a table from type to handler.

A handler runs inside the transaction that records the event's outcome, so its effects commit
exactly when the event is marked done. It returns ``processed`` or ``skipped`` (not ours, or
nothing to do), raises :class:`Unprocessable` for a payload that no retry can fix, and lets any
other error propagate to be retried.

Interface with dunning (and outgoing webhooks): the outbox topics below, each with the payload
``{"customer_id", "card": {"id", "brand", "last4", "exp_month", "exp_year"}, "stripe_event_id"}``.
Stripe may send several events about one card; consumers dedupe notices by card and expiry month.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox
from billing.customers.models import Customer
from billing.customers.service import set_payment_status
from billing.dunning.summary import customers_out
from billing.stripe_events.models import PROCESSED, SKIPPED
from billing.stripe_events.schemas import (
    Card,
    CardDetails,
    ObjectKind,
    PaymentIntent,
    PaymentMethod,
    Source,
)

TOPIC_EXPIRING = "customer.payment_method_expiring"
TOPIC_REMOVED = "customer.payment_method_removed"
TOPIC_UPDATED = "customer.payment_method_updated"
PAYMENT_FAILED = "payment_intent.payment_failed"
SOURCE_EXPIRING = "customer.source.expiring"
SOURCE_DELETED = "customer.source.deleted"
PM_DETACHED = "payment_method.detached"
PM_UPDATED = "payment_method.automatically_updated"
T = TypeVar("T")


class Unprocessable(Exception):
    """The stored payload cannot be handled, now or ever: the event fails without retries."""


@dataclass(frozen=True)
class StoredEvent:
    id: str
    tenant_id: str
    stripe_event_id: str
    type: str
    object: bytes
    previous_attributes: dict[str, Any] | None


Handler = Callable[[AsyncSession, StoredEvent, datetime], Awaitable[str]]


def _decode(raw: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        raise Unprocessable(f"data.object is not a {kind.__name__}: {exc}") from exc


@dataclass(frozen=True)
class CardRef:
    id: str
    customer: str | None
    details: CardDetails


def _card_payload(customer: Customer, card: CardRef, event: StoredEvent) -> dict[str, Any]:
    details = card.details
    return {
        "customer_id": customer.id,
        "card": {
            "id": card.id,
            "brand": details.brand,
            "last4": details.last4,
            "exp_month": details.exp_month,
            "exp_year": details.exp_year,
        },
        "stripe_event_id": event.stripe_event_id,
    }


def _source_card(raw: bytes) -> CardRef | None:
    """The card of a ``customer.source.*`` object: a Card, or a Source with a card; else None."""
    kind = _decode(raw, ObjectKind).object
    if kind == "card":
        card = _decode(raw, Card)
        return CardRef(card.id, card.customer, card)
    if kind == "source":
        source = _decode(raw, Source)
        return CardRef(source.id, source.customer, source.card) if source.card is not None else None
    return None  # bank accounts and other sources carry no card


async def _customers_by_provider_id(
    session: AsyncSession, tenant_id: str, provider_customer_id: str | None
) -> list[Customer]:
    if not provider_customer_id:
        return []
    query = sa.select(Customer).where(
        Customer.tenant_id == tenant_id, Customer.provider_customer_id == provider_customer_id
    )
    return list((await session.scalars(query.order_by(Customer.id))).all())


async def _emit_for_card(
    session: AsyncSession,
    event: StoredEvent,
    card: CardRef,
    customers: list[Customer],
    topic: str,
    now: datetime,
) -> None:
    await session.flush()
    for customer, snapshot in zip(customers, await customers_out(session, customers), strict=True):
        payload = _card_payload(customer, card, event) | {"object": msgspec.to_builtins(snapshot)}
        await outbox.emit(session, tenant_id=event.tenant_id, topic=topic, payload=payload, now=now)


async def _removed(
    session: AsyncSession, event: StoredEvent, card: CardRef, customers: list[Customer], now: datetime
) -> str:
    if not customers:
        return SKIPPED
    for customer in customers:
        if customer.default_payment_method == card.id:
            set_payment_status(customer, "action_required", at=now)
    await _emit_for_card(session, event, card, customers, TOPIC_REMOVED, now)
    return PROCESSED


async def source_expiring(session: AsyncSession, event: StoredEvent, now: datetime) -> str:
    card = _source_card(event.object)
    if card is None:
        return SKIPPED
    customers = await _customers_by_provider_id(session, event.tenant_id, card.customer)
    if not customers:
        return SKIPPED
    await _emit_for_card(session, event, card, customers, TOPIC_EXPIRING, now)
    return PROCESSED


async def source_deleted(session: AsyncSession, event: StoredEvent, now: datetime) -> str:
    card = _source_card(event.object)
    if card is None:
        return SKIPPED
    customers = await _customers_by_provider_id(session, event.tenant_id, card.customer)
    return await _removed(session, event, card, customers, now)


async def payment_method_detached(session: AsyncSession, event: StoredEvent, now: datetime) -> str:
    method = _decode(event.object, PaymentMethod)
    if method.card is None:
        return SKIPPED
    # Detached: ``customer`` is null now; the previous one is in previous_attributes, if at all.
    previous = (event.previous_attributes or {}).get("customer")
    owner = method.customer or (previous if isinstance(previous, str) else None)
    customers = await _customers_by_provider_id(session, event.tenant_id, owner)
    if not customers:
        query = sa.select(Customer).where(
            Customer.tenant_id == event.tenant_id, Customer.default_payment_method == method.id
        )
        customers = list((await session.scalars(query.order_by(Customer.id))).all())
    return await _removed(session, event, CardRef(method.id, owner, method.card), customers, now)


async def payment_method_updated(session: AsyncSession, event: StoredEvent, now: datetime) -> str:
    method = _decode(event.object, PaymentMethod)
    if method.card is None:
        return SKIPPED
    customers = await _customers_by_provider_id(session, event.tenant_id, method.customer)
    if not customers:
        return SKIPPED
    card = CardRef(method.id, method.customer, method.card)
    await _emit_for_card(session, event, card, customers, TOPIC_UPDATED, now)
    return PROCESSED


async def payment_failed(session: AsyncSession, event: StoredEvent, now: datetime) -> str:
    """Only PaymentIntents we created (our tenant and invoice in the metadata)."""
    from billing.payments import failures  # the payments layer imports much; keep the receiver light

    intent = _decode(event.object, PaymentIntent)
    invoice_id = intent.metadata.get("invoice_id")
    if intent.metadata.get("tenant_id") != event.tenant_id or not invoice_id:
        return SKIPPED
    error = intent.last_payment_error
    result = await failures.record_webhook_failure(
        session,
        tenant_id=event.tenant_id,
        invoice_id=invoice_id,
        payment_id=intent.metadata.get("payment_id") or None,
        provider_payment_id=intent.id,
        failure_code=error.code if error else None,
        decline_code=error.decline_code if error else None,
        message=error.message if error else None,
        at=now,
    )
    return SKIPPED if result == "skipped" else PROCESSED


HANDLERS: dict[str, Handler] = {
    PAYMENT_FAILED: payment_failed,
    SOURCE_EXPIRING: source_expiring,
    SOURCE_DELETED: source_deleted,
    PM_DETACHED: payment_method_detached,
    PM_UPDATED: payment_method_updated,
}
BASE_TYPES = frozenset({PAYMENT_FAILED, SOURCE_EXPIRING, SOURCE_DELETED})
ALL_TYPES = BASE_TYPES | {PM_DETACHED, PM_UPDATED}


def handled_types(payment_method_events: bool) -> frozenset[str]:
    """The types a tenant stores; the ``payment_method.*`` ones only when it opted in."""
    return ALL_TYPES if payment_method_events else BASE_TYPES
