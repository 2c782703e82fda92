"""The billing run: all invoicing work due by ``at``, for one tenant or all of them.

Called by ``POST /v1/billing/run`` and by the scheduler every minute. Work is claimed by locking
the subscription rows it concerns (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer
at a time), so replicas running it together share the work and never do any of it twice; what
is already done is no longer due, so running it again changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.context import AppContext
from billing.invoicing.close import close_periods
from billing.invoicing.finalize import finalize
from billing.invoicing.invoices import SCHEDULER
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.recompute import recompute
from billing.invoicing.schemas import BillingRunOut
from billing.scheduler import tick
from billing.tenants.models import Tenant

BATCH = 5000


async def run_billing(
    ctx: AppContext, *, at: datetime, tenant_id: str | None = None, actor: str = SCHEDULER
) -> BillingRunOut:
    created = await _in_batches(ctx, Subscription.next_period_end <= at, tenant_id, _closer(at, actor))
    recomputed = await _in_batches(
        ctx, Subscription.usage_changed_at.is_not(None), tenant_id, _recomputer(at, actor)
    )
    finalized = await _finalize_due(ctx, at, tenant_id, actor)
    return BillingRunOut(
        at=at, invoices_created=created, drafts_recomputed=recomputed, invoices_finalized=finalized
    )


Work = Callable[[AsyncSession, Tenant, Sequence[Subscription]], Awaitable[int]]


def _closer(at: datetime, actor: str) -> Work:
    async def work(session: AsyncSession, tenant: Tenant, subs: Sequence[Subscription]) -> int:
        return await close_periods(session, tenant, subs, at=at, actor=actor)

    return work


def _recomputer(at: datetime, actor: str) -> Work:
    async def work(session: AsyncSession, tenant: Tenant, subs: Sequence[Subscription]) -> int:
        return sum([await recompute(session, tenant, sub, at=at, actor=actor) for sub in subs])

    return work


async def _in_batches(ctx: AppContext, due: sa.ColumnElement[bool], tenant_id: str | None, work: Work) -> int:
    """Lock due subscriptions a batch at a time and do ``work`` on them, one transaction per batch.

    Batches walk the subscriptions in id order, so each is looked at once per run even if it
    becomes due again meanwhile (a new late event): the next run takes it then.
    """
    done = 0
    after = ""
    while True:
        async with ctx.database.transaction() as session:
            query = (
                sa.select(Subscription)
                .where(due, Subscription.id > after)
                .order_by(Subscription.id)
                .limit(BATCH)
            )
            if tenant_id is not None:
                query = query.where(Subscription.tenant_id == tenant_id)
            subs = list(await session.scalars(query.with_for_update(skip_locked=True)))
            if not subs:
                return done
            after = subs[-1].id
            by_tenant: dict[str, list[Subscription]] = defaultdict(list)
            for sub in subs:
                by_tenant[sub.tenant_id].append(sub)
            for owner, owned in by_tenant.items():
                tenant = await session.get_one(Tenant, owner)
                done += await work(session, tenant, owned)


async def _finalize_due(ctx: AppContext, at: datetime, tenant_id: str | None, actor: str) -> int:
    """Finalize drafts whose grace period has passed, one transaction each (the number sequence
    is locked only for that long)."""
    done = 0
    while True:
        async with ctx.database.transaction() as session:
            query = (
                sa.select(Invoice)
                .join(Subscription, Subscription.id == Invoice.subscription_id)
                .where(Invoice.status == "draft", Invoice.grace_ends_at <= at)
                .order_by(Invoice.period_start, Invoice.id)
                .limit(1)
                .with_for_update(of=Subscription, skip_locked=True)
            )
            if tenant_id is not None:
                query = query.where(Invoice.tenant_id == tenant_id)
            invoice = (await session.scalars(query)).first()
            if invoice is None:
                return done
            tenant = await session.get_one(Tenant, invoice.tenant_id)
            done += len(await finalize(session, tenant, invoice, at=at, actor=actor))


@tick("billing", every_seconds=60)
async def billing_tick(ctx: AppContext) -> None:
    await run_billing(ctx, at=ctx.clock.now())
