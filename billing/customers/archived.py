"""Archived customers: kept with their history, but nothing new is billed to them.

Archiving itself ends what the customer has running, which customers cannot see: the domain above
does that and then calls :func:`mark_archived`, in one transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox
from billing.core.db.queries import any_of
from billing.core.errors import Conflict
from billing.customers.models import Customer
from billing.customers.ports import Summaries
from billing.customers.service import customers_out

ARCHIVED = "customer.archived"
CODE = "customer_archived"


def ensure_not_archived(customer: Customer) -> None:
    """409 ``customer_archived`` for anything new (a subscription, a change) on an archived customer."""
    if customer.archived_at is not None:
        raise Conflict(f"Customer {customer.id} is archived", code=CODE)


async def mark_archived(
    session: AsyncSession, customer: Customer, *, now: datetime, summaries: Summaries
) -> None:
    """Set ``archived_at`` and queue ``customer.archived`` with the customer as the API returns it."""
    customer.archived_at = customer.updated_at = now
    await session.flush()
    (snapshot,) = await customers_out(session, [customer], summaries)
    payload = {"customer_id": customer.id, "object": msgspec.to_builtins(snapshot)}
    await outbox.emit(session, tenant_id=customer.tenant_id, topic=ARCHIVED, payload=payload, now=now)


async def archived_among(session: AsyncSession, customer_ids: Collection[str]) -> set[str]:
    """Which of these customers are archived; one query (by primary key) for a whole batch."""
    if not customer_ids:
        return set()
    dialect = session.get_bind().dialect.name
    query = sa.select(Customer.id).where(
        any_of(Customer.__table__.c.id, list(customer_ids), dialect), Customer.archived_at.is_not(None)
    )
    return set(await session.scalars(query))
