"""The delivery log as the tenant reads it, and manual retries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import Conflict, NotFound
from billing.core.pagination import PageRequest, fetch_page
from billing.webhooks.models import PENDING, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.webhooks.schemas import AttemptOut, DeliveryOut, attempt_out, delivery_out


async def get_delivery(session: AsyncSession, tenant_id: str, delivery_id: str) -> WebhookDelivery:
    query = sa.select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id == delivery_id
    )
    delivery = (await session.scalars(query)).first()
    if delivery is None:
        raise NotFound(f"No webhook delivery {delivery_id}")
    return delivery


async def list_deliveries(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    page: PageRequest,
    *,
    status: str | None = None,
    event_type: str | None = None,
) -> tuple[list[WebhookDelivery], bool]:
    query = sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if event_type is not None:
        query = query.where(WebhookDelivery.event_type == event_type)
    return await fetch_page(session, query, WebhookDelivery.id, page)


async def requeue(session: AsyncSession, delivery: WebhookDelivery, *, now: datetime) -> None:
    """Due now. A pending delivery keeps its retry window; a finished one gets one more attempt."""
    endpoint = await session.get_one(WebhookEndpoint, delivery.endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            f"Webhook endpoint {endpoint.id} is disabled: enable it first", code="endpoint_disabled"
        )
    if delivery.status != PENDING:
        delivery.status = PENDING
        delivery.retry_until = now
        delivery.delivered_at = delivery.failed_at = None
    delivery.next_attempt_at = now


async def deliveries_out(session: AsyncSession, deliveries: Sequence[WebhookDelivery]) -> list[DeliveryOut]:
    """The wire shape, with every attempt, in one more query."""
    attempts: dict[str, list[AttemptOut]] = defaultdict(list)
    if deliveries:
        query = (
            sa.select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        )
        for attempt in await session.scalars(query):
            attempts[attempt.delivery_id].append(attempt_out(attempt))
    return [delivery_out(delivery, attempts[delivery.id]) for delivery in deliveries]
