"""A tenant's dunning policy; tenants without one get the default."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.inserts import insert_ignore
from billing.core.errors import FieldError, ValidationFailed
from billing.dunning.decide import Policy
from billing.dunning.models import DunningPolicy
from billing.dunning.schemas import PolicyIn, PolicyOut, policy_out

DEFAULT = Policy()


async def get_policy(session: AsyncSession, tenant_id: str) -> Policy:
    row = await session.get(DunningPolicy, tenant_id)
    if row is None:
        return DEFAULT
    return Policy(
        retry_schedule_days=tuple(row.retry_schedule_days),
        final_action=row.final_action,
        suspend_customer=row.suspend_customer,
        expiring_card_notice=row.expiring_card_notice,
    )


async def read_policy(session: AsyncSession, tenant_id: str) -> PolicyOut:
    """The tenant's policy on the wire; ``updated_at`` is None while the default applies."""
    row = await session.get(DunningPolicy, tenant_id)
    updated_at = row.updated_at if row is not None else None
    return policy_out(await get_policy(session, tenant_id), updated_at)


async def put_policy(session: AsyncSession, tenant_id: str, data: PolicyIn, *, at: datetime) -> PolicyOut:
    days = data.retry_schedule_days
    if any(later <= earlier for earlier, later in pairwise(days)):
        message = "days must be strictly increasing (offsets from the first failed charge)"
        raise ValidationFailed(
            f"retry_schedule_days: {message}", errors=[FieldError("retry_schedule_days", message)]
        )
    default = {
        "tenant_id": tenant_id,
        "retry_schedule_days": list(DEFAULT.retry_schedule_days),
        "final_action": DEFAULT.final_action,
        "suspend_customer": DEFAULT.suspend_customer,
        "expiring_card_notice": DEFAULT.expiring_card_notice,
        "updated_at": at,
    }
    await insert_ignore(session, DunningPolicy.__table__, [default])  # concurrent PUTs: one row, last wins
    row = await session.get_one(DunningPolicy, tenant_id, with_for_update=True, populate_existing=True)
    row.retry_schedule_days = list(days)
    row.final_action = data.final_action
    row.suspend_customer = data.suspend_customer
    row.expiring_card_notice = data.expiring_card_notice
    row.updated_at = at
    await session.flush()
    return policy_out(await get_policy(session, tenant_id), at)
