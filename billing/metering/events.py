"""Reading accepted usage events back: ``GET /v1/events/{id}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.errors import NotFound
from billing.customers.models import Customer
from billing.metering.models import Meter
from billing.metering.usage_models import UsageEvent


class EventOut(msgspec.Struct):
    id: str
    customer: str
    customer_external_id: str
    meter: str
    timestamp: datetime
    value: str
    properties: dict[str, Any] | None
    received_at: datetime
    billing_status: str
    invoice: str | None
    object: str = "event"


async def get_event(session: AsyncSession, tenant_id: str, event_id: str) -> EventOut:
    query = (
        sa.select(UsageEvent, Customer.external_id, Meter.key)
        .join(Customer, Customer.id == UsageEvent.customer_id)
        .join(Meter, Meter.id == UsageEvent.meter_id)
        .where(UsageEvent.tenant_id == tenant_id, UsageEvent.event_id == event_id)
    )
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound(f"No event '{event_id}'")
    event, external_id, meter_key = row
    return EventOut(
        id=event.event_id,
        customer=event.customer_id,
        customer_external_id=external_id,
        meter=meter_key,
        timestamp=event.timestamp,
        value=money.format_decimal(event.value),
        properties=event.properties,
        received_at=event.received_at,
        billing_status="invoiced" if event.invoice_id else "pending",
        invoice=event.invoice_id,
    )
