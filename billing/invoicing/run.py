"""Invoicing's share of the billing run, due by ``at`` for one tenant or all of them: periods
closed into drafts, drafts recomputed after late usage, drafts finalized after their grace period.

``billing.jobs`` runs these steps from the scheduler and from ``POST /v1/billing/run``. Work is
claimed by locking the subscription rows it concerns (FOR UPDATE SKIP LOCKED on PostgreSQL;
SQLite has one writer at a time), so replicas running it together share the work and never do
any of it twice; what is already done is no longer due, so running it again changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.invoicing import trials
from billing.invoicing.close import close_periods
from billing.invoicing.finalize import finalize
from billing.invoicing.invoices import SCHEDULER
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.recompute import recompute
from billing.invoicing.run_tallies import RunTallies
from billing.invoicing.subscriptions import notify_trial_end
from billing.invoicing.terms import terms_of_drafts
from billing.tenants.models import Tenant

BATCH = 5000
log = structlog.get_logger("billing.invoicing.run")
FAILURES = Counter("billing_run_failures_total", "Billing work that failed and was left for the next run")


async def close_due(
    ctx: AppContext, *, at: datetime, tenant_id: str | None = None, actor: str = SCHEDULER
) -> int:
    """Close every period that has ended by ``at`` into a draft; return how many drafts."""
    return await _in_batches(ctx, Subscription.next_period_end <= at, tenant_id, _closer(at, actor))


async def recompute_due(
    ctx: AppContext, *, at: datetime, tenant_id: str | None = None, actor: str = SCHEDULER
) -> int:
    """Recompute the drafts of subscriptions that received late usage; return how many."""
    return await _in_batches(
        ctx, Subscription.usage_changed_at.is_not(None), tenant_id, _recomputer(at, actor)
    )


async def notify_trials_due(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """Send ``subscription.trial_will_end`` for trials ending within 72 hours of ``at``."""

    async def work(session: AsyncSession, tenant: Tenant, subs: Sequence[Subscription]) -> int:
        return await notify_trial_end(session, subs, at)

    return await _in_batches(ctx, trials.due(at), tenant_id, work)


Work = Callable[[AsyncSession, Tenant, Sequence[Subscription]], Awaitable[int]]


def _closer(at: datetime, actor: str) -> Work:
    tallies = RunTallies(at)

    async def work(session: AsyncSession, tenant: Tenant, subs: Sequence[Subscription]) -> int:
        return await close_periods(session, tenant, subs, at=at, actor=actor, tallies=tallies)

    return work


def _recomputer(at: datetime, actor: str) -> Work:
    async def work(session: AsyncSession, tenant: Tenant, subs: Sequence[Subscription]) -> int:
        known = await terms_of_drafts(session, tenant.id, [sub.id for sub in subs], at=at)
        return sum([await recompute(session, tenant, sub, at=at, actor=actor, known=known) for sub in subs])

    return work


async def _in_batches(ctx: AppContext, due: sa.ColumnElement[bool], tenant_id: str | None, work: Work) -> int:
    """Lock due subscriptions a batch at a time and do ``work`` on them, one transaction per batch.

    Batches walk the subscriptions in id order, so each is looked at once per run even if it
    becomes due again meanwhile (a new late event): the next run takes it then. A batch that
    fails is redone one subscription at a time, so one bad subscription never holds up the rest.
    """
    done, after = 0, ""
    while True:
        try:
            count, last = await _batch(ctx, due, tenant_id, after, BATCH, work)
        except Exception:
            log.exception("billing batch failed; retrying its subscriptions one at a time", after=after)
            FAILURES.inc()
            count, last = await _one_by_one(ctx, due, tenant_id, after, work)
        if last is None:
            return done + count
        done, after = done + count, last


async def _batch(
    ctx: AppContext, due: sa.ColumnElement[bool], tenant_id: str | None, after: str, limit: int, work: Work
) -> tuple[int, str | None]:
    """Work on up to ``limit`` due subscriptions after ``after``; the last id, None when none was due."""
    async with ctx.database.transaction() as session:
        query = _due(due, tenant_id, after).limit(limit).with_for_update(skip_locked=True)
        subs = list(await session.scalars(query))
        if not subs:
            return 0, None
        by_tenant: dict[str, list[Subscription]] = defaultdict(list)
        for sub in subs:
            by_tenant[sub.tenant_id].append(sub)
        done = 0
        for owner, owned in by_tenant.items():
            done += await work(session, await session.get_one(Tenant, owner), owned)
        return done, subs[-1].id


def _due(due: sa.ColumnElement[bool], tenant_id: str | None, after: str) -> sa.Select[Subscription]:
    query = sa.select(Subscription).where(due, Subscription.id > after).order_by(Subscription.id)
    return query.where(Subscription.tenant_id == tenant_id) if tenant_id is not None else query


async def _one_by_one(
    ctx: AppContext, due: sa.ColumnElement[bool], tenant_id: str | None, after: str, work: Work
) -> tuple[int, str | None]:
    done = 0
    for _ in range(BATCH):
        try:
            count, last = await _batch(ctx, due, tenant_id, after, 1, work)
        except Exception:
            async with ctx.database.read() as session:
                last = await session.scalar(
                    _due(due, tenant_id, after).with_only_columns(Subscription.id).limit(1)
                )
            log.exception("billing failed for a subscription; skipped until the next run", subscription=last)
            FAILURES.inc()
            count = 0
        if last is None:
            return done, None
        done, after = done + count, last
    return done, after


async def finalize_due(
    ctx: AppContext, *, at: datetime, tenant_id: str | None = None, actor: str = SCHEDULER
) -> int:
    """Finalize drafts whose grace period has passed, one transaction each (the number sequence
    is locked only for that long). One that fails is logged, counted and left for the next run."""
    done = 0
    failed: set[str] = set()
    while True:
        async with ctx.database.transaction() as session:
            invoice = await _next_due_draft(session, at, tenant_id, failed)
            if invoice is None:
                return done
            invoice_id = invoice.id
            tenant = await session.get_one(Tenant, invoice.tenant_id)
            try:
                async with session.begin_nested():
                    done += len(await finalize(session, tenant, invoice, at=at, actor=actor))
            except Exception:
                log.exception("finalizing an invoice failed; left as a draft", invoice=invoice_id)
                FAILURES.inc()
                failed.add(invoice_id)


async def _next_due_draft(
    session: AsyncSession, at: datetime, tenant_id: str | None, failed: set[str]
) -> Invoice | None:
    """The next draft past its grace period, locked: a subscription's (by its subscription row),
    else a standalone one (by its own row); drafts that wait for a manual finalize are left."""
    due = [
        Invoice.status == "draft",
        Invoice.grace_ends_at <= at,
        Invoice.auto_finalize.is_(True),
        Invoice.id.not_in(failed),
    ]
    if tenant_id is not None:
        due.append(Invoice.tenant_id == tenant_id)
    of_subscription = (
        sa.select(Invoice)
        .join(Subscription, Subscription.id == Invoice.subscription_id)
        .where(*due)
        .order_by(Invoice.period_start, Invoice.id)
        .limit(1)
        .with_for_update(of=Subscription, skip_locked=True)
    )
    invoice = (await session.scalars(of_subscription)).first()
    if invoice is not None:
        return invoice
    standalone = (
        sa.select(Invoice)
        .where(*due, Invoice.subscription_id.is_(None))
        .order_by(Invoice.period_start, Invoice.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(standalone)).first()
