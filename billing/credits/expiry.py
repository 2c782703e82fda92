"""At ``expires_at`` a grant turns ``expired``, and an ``expired`` entry dated that instant takes
what is left. The job works one customer per transaction, so it never holds one customer's
grants while waiting for another's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.credits import ledger
from billing.credits.grants import EXPIRED, emit
from billing.credits.ledger import Movement
from billing.credits.models import CreditGrant

BATCH = 500
LIVE = ("pending", "active", "depleted")


def _due(at: datetime, tenant_id: str | None, customer_id: str | None) -> sa.Select[Any]:
    query = sa.select(CreditGrant.id).where(CreditGrant.status.in_(LIVE), CreditGrant.expires_at <= at)
    if tenant_id is not None:
        query = query.where(CreditGrant.tenant_id == tenant_id)
    if customer_id is not None:
        query = query.where(CreditGrant.customer_id == customer_id)
    return query


async def expire_grants(
    session: AsyncSession, at: datetime, tenant_id: str | None = None, *, customer_id: str | None = None
) -> int:
    """Expire every grant whose ``expires_at`` ≤ ``at`` (of one tenant, or one customer, or all);
    return how many. A pending grant (its invoice unpaid) expires without an entry."""
    grants = await ledger.lock_grants(session, list(await session.scalars(_due(at, tenant_id, customer_id))))
    by_customer: dict[tuple[str, str], list[CreditGrant]] = {}
    for grant in grants:
        if grant.status in LIVE and grant.expires_at is not None and grant.expires_at <= at:
            by_customer.setdefault((grant.customer_id, grant.currency), []).append(grant)
    for group in by_customer.values():
        # Entries in the order the grants expired.
        group.sort(key=lambda grant: (grant.expires_at, grant.id))
        movements = [
            Movement(grant, "expired", -grant.available, at=grant.expires_at)
            for grant in group
            if grant.available
        ]
        await ledger.write(session, movements, at=at)
        for grant in group:
            grant.status, grant.updated_at = "expired", at
            await emit(session, grant, EXPIRED, now=at)
    return sum(len(group) for group in by_customer.values())


async def expire_due(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """The job: every grant due by ``at``, one customer per transaction."""
    done = 0
    async with ctx.database.read() as session:
        query = _due(at, tenant_id, None).with_only_columns(CreditGrant.customer_id).distinct().limit(BATCH)
        customers = list(await session.scalars(query))
    while customers:
        for customer_id in customers:
            async with ctx.database.transaction() as session:
                done += await expire_grants(session, at, tenant_id, customer_id=customer_id)
        async with ctx.database.read() as session:
            customers = list(await session.scalars(query))
    return done
