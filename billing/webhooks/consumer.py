"""The outbox consumer that turns domain events into webhook deliveries.

For each event it snapshots the resource once (the invoice or the customer, as the API returns it)
into the envelope ``{"id", "type", "created_at", "data"}`` and queues one delivery per enabled
endpoint subscribed to the type. Every attempt of a delivery sends exactly that body. Deliveries
are unique per (endpoint, event), so a redelivered outbox message queues nothing twice.

Some events carry facts the resource does not show; they go in an optional ``related`` object:
``{"payment": "pay_..."}`` for invoice.payment_failed, ``{"card": {...}}`` for the card events,
``{"invoice", "dunning_case"}`` for customer.suspended, ``{"customer", "dunning_case"}`` for dunning.*.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.db.inserts import insert_ignore
from billing.core.ids import new_id
from billing.core.outbox import Message
from billing.customers.models import Customer
from billing.dunning.summary import customers_out
from billing.invoicing.invoices import invoices_out
from billing.invoicing.models import Invoice
from billing.payments.views import PAYMENTS
from billing.webhooks.backoff import RETRY_WINDOW
from billing.webhooks.events import (
    CARD_TOPICS,
    DUNNING_CUSTOMER_TOPICS,
    DUNNING_INVOICE_TOPICS,
    INVOICE_TOPICS,
    subscribed,
)
from billing.webhooks.models import PENDING, WebhookDelivery, WebhookEndpoint

CONSUMER = "webhooks"
log = structlog.get_logger("billing.webhooks")
_encoder = msgspec.json.Encoder()


class Envelope(msgspec.Struct, omit_defaults=True):
    id: str
    type: str
    created_at: datetime
    data: Any
    related: dict[str, Any] | None = None


async def handle(ctx: AppContext, message: Message) -> None:
    async with ctx.database.transaction() as session:
        await queue_deliveries(session, message)


async def queue_deliveries(session: AsyncSession, message: Message) -> int:
    """Queue the event for every subscribed enabled endpoint of its tenant; return how many were new."""
    query = sa.select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == message.tenant_id, WebhookEndpoint.enabled.is_(True)
    )
    endpoints = [e for e in await session.scalars(query) if subscribed(list(e.events), message.topic)]
    if not endpoints:
        return 0
    body = await envelope_body(session, message)
    if body is None:
        log.warning("webhook_resource_missing", topic=message.topic, event_id=message.event_id)
        return 0
    rows = [_delivery(message, endpoint.id, body) for endpoint in endpoints]
    inserted = await insert_ignore(
        session, WebhookDelivery.__table__, rows, returning=[WebhookDelivery.__table__.c.id]
    )
    return len(inserted)


def _delivery(message: Message, endpoint_id: str, body: str) -> dict[str, Any]:
    return {
        "id": new_id("whd"),
        "tenant_id": message.tenant_id,
        "endpoint_id": endpoint_id,
        "event_id": message.event_id,
        "event_type": message.topic,
        "body": body,
        "status": PENDING,
        "attempt_count": 0,
        "created_at": message.created_at,
        "next_attempt_at": message.created_at,
        "retry_until": message.created_at + RETRY_WINDOW,
    }


async def envelope_body(session: AsyncSession, message: Message) -> str | None:
    """The JSON body every attempt sends; None when the resource it is about cannot be found."""
    found = await _resource(session, message.tenant_id, message.topic, message.payload, message.created_at)
    if found is None:
        return None
    data, related = found
    envelope = Envelope(message.event_id, message.topic, message.created_at, data, related or None)
    return _encoder.encode(envelope).decode()


async def _resource(
    session: AsyncSession, tenant_id: str, topic: str, payload: Mapping[str, Any], at: datetime
) -> tuple[Any, dict[str, Any]] | None:
    """The object as the event saw it (its snapshot); for events written before they carried one,
    the object as it is now."""
    if "object" in payload:
        data = payload["object"]
    elif topic in INVOICE_TOPICS or topic in DUNNING_INVOICE_TOPICS:
        data = await _invoice(session, tenant_id, payload.get("invoice_id"), at)
    else:
        data = await _customer(session, tenant_id, payload.get("customer_id"))
    return None if data is None else (data, _related(topic, payload))


def _related(topic: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    if topic == "invoice.payment_failed" and isinstance(payload.get("payment"), Mapping):
        return {"payment": payload["payment"].get("id")}
    if topic in CARD_TOPICS:
        return {"card": payload.get("card")}
    if topic in DUNNING_CUSTOMER_TOPICS:
        return _present({"invoice": payload.get("invoice_id"), "dunning_case": payload.get("case_id")})
    if topic in DUNNING_INVOICE_TOPICS:
        return _present({"customer": payload.get("customer_id"), "dunning_case": payload.get("case_id")})
    return {}


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


async def _invoice(session: AsyncSession, tenant_id: str, invoice_id: object, at: datetime) -> Any:
    if not isinstance(invoice_id, str):
        return None
    query = sa.select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
    invoice = (await session.scalars(query)).first()
    return None if invoice is None else (await invoices_out(session, [invoice], PAYMENTS, now=at))[0]


async def _customer(session: AsyncSession, tenant_id: str, customer_id: object) -> Any:
    if not isinstance(customer_id, str):
        return None
    customer = await session.get(Customer, customer_id)
    if customer is None or customer.tenant_id != tenant_id:
        return None
    return (await customers_out(session, [customer]))[0]
