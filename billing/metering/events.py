"""Reading accepted usage events back: ``GET /v1/events/{id}``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import NotFound
from billing.customers.models import Customer
from billing.metering.models import Meter
from billing.metering.schemas import EventOut, event_out
from billing.metering.usage_models import UsageEvent


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
    return event_out(event, external_id, meter_key)
