"""The inbox as the tenant reads it, and replays of failed or skipped events."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import Conflict, NotFound
from billing.core.pagination import PageRequest, fetch_page
from billing.stripe_events.models import PROCESSED, RECEIVED, StripeEvent


async def list_events(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    status: str | None = None,
    event_type: str | None = None,
) -> tuple[list[StripeEvent], bool]:
    query = sa.select(StripeEvent).where(StripeEvent.tenant_id == tenant_id)
    if status is not None:
        query = query.where(StripeEvent.status == status)
    if event_type is not None:
        query = query.where(StripeEvent.type == event_type)
    return await fetch_page(session, query, StripeEvent.id, page)


async def get_event(session: AsyncSession, tenant_id: str, event_id: str) -> StripeEvent:
    row = await session.get(StripeEvent, event_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"No Stripe event {event_id}")
    return row


async def requeue(session: AsyncSession, tenant_id: str, event_id: str, *, now: datetime) -> StripeEvent:
    """Due now, with its attempts reset when it had failed or was skipped; Conflict once processed."""
    row = await get_event(session, tenant_id, event_id)
    if row.status == PROCESSED:
        raise Conflict(f"Stripe event {event_id} was processed already", code="invalid_transition")
    if row.status != RECEIVED:
        row.status, row.attempts, row.last_error, row.handled_at = RECEIVED, 0, None, None
    row.next_attempt_at = now
    return row
