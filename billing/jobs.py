"""The composition root for background work: every job and every outbox consumer, as data.

The scheduler of ``billing serve`` and ``billing worker`` runs each job every ``every_seconds``
(the work is claimed in the database, so any number of replicas share it without doing any of
it twice); ``POST /v1/billing/run`` runs every job once, in this order, at its ``at``. A new job
is a function in its domain plus one line in ``JOBS``; a new outbox consumer, one line in
``CONSUMERS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from billing.alerts.evaluate import evaluate_due as evaluate_alerts
from billing.core.context import AppContext
from billing.core.outbox import Consumer, dispatch_all
from billing.core.scheduler import Tick
from billing.credits.expiry import expire_due
from billing.dunning import cards as dunning_cards
from billing.dunning import run as dunning_run
from billing.invoicing import run as invoicing_run
from billing.invoicing.invoices import SCHEDULER
from billing.invoicing.overdue import announce_overdue
from billing.invoicing.thresholds import bill_thresholds
from billing.notifications import subscription_events, tenant_events
from billing.notifications.dispatch import dispatch_notifications
from billing.payments.charge import charge_due, charge_first
from billing.payments.reconcile import flag_stale, reconcile_due
from billing.payments.views import PAYMENTS
from billing.stripe_events.process import process_all
from billing.web.idempotency_keys import purge_expired
from billing.webhooks import consumer as webhook_consumer
from billing.webhooks import events as webhook_events
from billing.webhooks.dispatcher import deliver_all


@dataclass(frozen=True)
class Run:
    """One pass over the jobs: the time it works at (None: the clock's, as each piece of work is
    done), one tenant or all of them, and who asked (recorded on invoice status changes)."""

    at: datetime | None = None
    tenant_id: str | None = None
    actor: str = SCHEDULER

    def when(self, ctx: AppContext) -> datetime:
        return self.at or ctx.clock.now()


JobFunction = Callable[[AppContext, Run], Awaitable[int]]


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: int
    run: JobFunction  # returns how much it did


CONSUMERS: tuple[Consumer, ...] = (
    Consumer("dunning", dunning_run.TOPICS, dunning_run.handle),
    Consumer(webhook_consumer.CONSUMER, webhook_events.TOPICS, webhook_consumer.handle),
    Consumer(tenant_events.CONSUMER, tenant_events.TOPICS, tenant_events.on_endpoint_disabled),
    Consumer(subscription_events.CONSUMER, subscription_events.TOPICS, subscription_events.on_trial_will_end),
)

JOBS: tuple[Job, ...] = (
    Job(
        "close_periods",
        60,
        lambda ctx, r: invoicing_run.close_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id, actor=r.actor),
    ),
    Job(
        "recompute_drafts",
        60,
        lambda ctx, r: invoicing_run.recompute_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id, actor=r.actor),
    ),
    # Before finalizing: a grant that expired by then covers no draft.
    Job("credit_grants_expire", 60, lambda ctx, r: expire_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id)),
    Job("threshold_invoices", 15, lambda ctx, r: _threshold_invoices(ctx, r)),
    Job(
        "finalize_drafts",
        60,
        lambda ctx, r: invoicing_run.finalize_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id, actor=r.actor),
    ),
    Job(
        "trial_notices",
        60,
        lambda ctx, r: invoicing_run.notify_trials_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id),
    ),
    # Within seconds of the usage: the current period's value, after the invoicing jobs.
    Job("alerts_evaluate", 15, lambda ctx, r: evaluate_alerts(ctx, at=r.when(ctx), tenant_id=r.tenant_id)),
    # What providers told us, before we ask them anything.
    Job("stripe_events", 5, lambda ctx, r: process_all(ctx)),
    Job("payments_reconcile", 60, lambda ctx, r: reconcile_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id)),
    Job("payments_charge", 60, lambda ctx, r: charge_due(ctx, at=r.when(ctx), tenant_id=r.tenant_id)),
    Job("payments_sweep", 3600, lambda ctx, r: flag_stale(ctx, at=r.when(ctx))),
    Job("dunning", 60, lambda ctx, r: dunning_run.run_dunning(ctx, at=r.when(ctx), tenant_id=r.tenant_id)),
    Job(
        "invoices_overdue",
        60,
        lambda ctx, r: announce_overdue(ctx, PAYMENTS, at=r.when(ctx), tenant_id=r.tenant_id),
    ),
    Job(
        "card_scan",
        60,
        lambda ctx, r: dunning_cards.scan_expiring_cards(ctx, at=r.when(ctx), tenant_id=r.tenant_id),
    ),
    # Last: what the jobs above emitted, then the emails and webhooks that queued.
    Job("outbox", 5, lambda ctx, r: dispatch_all(ctx, CONSUMERS, at=r.at)),
    Job("notifications", 10, lambda ctx, r: dispatch_notifications(ctx, at=r.at)),
    Job("webhooks", 5, lambda ctx, r: deliver_all(ctx, at=r.at, tenant_id=r.tenant_id)),
    Job("idempotency_keys", 3600, lambda ctx, r: purge_expired(ctx, at=r.when(ctx), scope=r.tenant_id)),
)


async def _threshold_invoices(ctx: AppContext, run: Run) -> int:
    """Threshold invoices, charged at once (they are due when made) rather than at the next
    ``payments_charge`` tick: within seconds of the usage that crossed the threshold."""
    at = run.when(ctx)
    made = await bill_thresholds(ctx, at=at, tenant_id=run.tenant_id, actor=run.actor)
    for invoice_id in made:
        await charge_first(ctx, invoice_id, at=at)
    return len(made)


async def run_jobs(ctx: AppContext, run: Run) -> dict[str, int]:
    """Every job once, in order, at ``run.at``; how much each did, by name. Errors propagate."""
    return {job.name: await job.run(ctx, run) for job in JOBS}


async def billing_run(ctx: AppContext, at: datetime, tenant_id: str) -> dict[str, int]:
    """``POST /v1/billing/run`` as a function, for one tenant (the demo replays its history so)."""
    return await run_jobs(ctx, Run(at=at, tenant_id=tenant_id))


async def dispatch_outbox(ctx: AppContext, *, at: datetime | None = None) -> int:
    """Fan out and handle everything due in the outbox, for every consumer."""
    return await dispatch_all(ctx, CONSUMERS, at=at)


def ticks() -> list[Tick]:
    """The scheduler's ticks: each job at its own interval, working at the clock's time."""
    return [Tick(job.name, job.every_seconds, _tick(job)) for job in JOBS]


def _tick(job: Job) -> Callable[[AppContext], Awaitable[int]]:
    async def run(ctx: AppContext) -> int:
        return await job.run(ctx, Run())

    return run
