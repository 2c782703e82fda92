"""Progressive billing: a threshold invoice, finalized and due at once, each time the usage
accrued in a subscription's period passes a new multiple of its plan's ``threshold_amount``.

``accrued`` is the period's usage so far as the invoice that closes it would rate it, without
base fee, floors or plan minimum: usage lines on cumulative quantities (tiers never restart),
capped. When ``floor(accrued / T)`` is above the last multiple made in the period, one invoice
is made at that multiple (several multiples passed at once make one invoice): its usage lines to
date, then minus what the period's earlier threshold invoices billed (``threshold_billed``).

Customers are found through ``metering.recent_usage`` (no write on ingestion's path). The
subscription row is locked while its invoice is made, and the unique (subscription, period
start, multiple) key makes a second one a no-op, so replicas never bill a multiple twice. A made
multiple stays made whatever becomes of its invoice: a declined charge goes to dunning and the
next invoice waits for the next multiple, so a decline never loops.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.db.queries import any_of
from billing.invoicing import lines, periods, schedule
from billing.invoicing.catalog import load_catalog
from billing.invoicing.close import draft_row, insert_drafts
from billing.invoicing.fee_tallies import period_fees
from billing.invoicing.finalize import open_at_once
from billing.invoicing.grouped_usage import customer_usage
from billing.invoicing.invoices import SCHEDULER
from billing.invoicing.models import Invoice, Plan, Subscription
from billing.invoicing.run import FAILURES
from billing.invoicing.threshold_billed import THRESHOLD, threshold_billed
from billing.metering import recent_usage
from billing.tenants.models import Tenant

CONSUMER = "thresholds"
log = structlog.get_logger("billing.invoicing.thresholds")


async def bill_thresholds(
    ctx: AppContext, *, at: datetime, tenant_id: str | None = None, actor: str = SCHEDULER
) -> list[str]:
    """Make the threshold invoices due by ``at`` for customers with new usage; return their ids.
    The usage cursor moves on only when every subscription was handled (else all are seen again)."""
    async with ctx.database.transaction() as session:
        window = await recent_usage.new_usage(session, CONSUMER, tenant_id, at)
        candidates = await _candidates(session, window.customers)
    made: list[str] = []
    failed = False
    for subscription_id in candidates:
        try:
            async with ctx.database.transaction() as session:
                invoice_id = await bill_subscription(session, subscription_id, at=at, actor=actor)
            if invoice_id is not None:
                made.append(invoice_id)
        except Exception:
            log.exception("threshold billing failed; retried on the next pass", subscription=subscription_id)
            FAILURES.inc()
            failed = True
    if not failed:
        async with ctx.database.transaction() as session:
            await recent_usage.advance(session, window, at)
    return made


async def _candidates(session: AsyncSession, customers: Sequence[tuple[str, str]]) -> list[str]:
    """The running subscriptions of these customers whose plan has a threshold_amount."""
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for tenant_id, customer_id in customers:
        by_tenant[tenant_id].append(customer_id)
    dialect = session.get_bind().dialect.name
    found: list[str] = []
    for tenant_id, customer_ids in by_tenant.items():
        for first in range(0, len(customer_ids), 2000):
            query = (
                sa.select(Subscription.id)
                .join(Plan, Plan.id == Subscription.plan_id)
                .where(
                    Subscription.tenant_id == tenant_id,
                    any_of(Subscription.__table__.c.customer_id, customer_ids[first : first + 2000], dialect),
                    Subscription.next_period_end.is_not(None),
                    Plan.threshold_amount.is_not(None),
                )
                .order_by(Subscription.id)
            )
            found += await session.scalars(query)
    return found


async def bill_subscription(
    session: AsyncSession, subscription_id: str, *, at: datetime, actor: str
) -> str | None:
    """The threshold invoice the subscription's period owes at ``at``, finalized: its id; None
    when none is owed."""
    sub = (
        await session.scalars(
            sa.select(Subscription).where(Subscription.id == subscription_id).with_for_update()
        )
    ).one()
    period = _open_period(sub, at)
    if period is None:
        return None
    plan = (await load_catalog(session, [sub.plan_id])).plans[sub.plan_id]
    if plan.threshold_amount is None:
        return None
    drafted = await accrued_lines(session, plan, sub, period, at)
    multiple = sum(line.amount for line in drafted) // plan.threshold_amount
    billed = await threshold_billed(session, sub.id, period.start)
    if multiple <= billed.last_multiple:
        return None
    span = periods.Period(period.start, at)
    drafted.append(lines.already_billed_line(plan, billed.amount, span))
    tenant = await session.get_one(Tenant, sub.tenant_id)
    row = draft_row(tenant, sub, plan.currency, period.start, at, at, billing_reason=THRESHOLD)
    row["threshold_multiple"] = multiple
    ordered = list(drafted)
    if not await insert_drafts(session, [(row, drafted)], actor, at, pending_items=False):
        return None
    invoice = await session.get_one(Invoice, row["id"])
    await open_at_once(session, tenant, invoice, ordered, at=at, actor=actor)
    return invoice.id


def _open_period(sub: Subscription, at: datetime) -> periods.Period | None:
    """The period at ``at`` when it is paid and not closed yet (its invoice bills it whole)."""
    period = schedule.period_at(sub, at)
    if period is None or at <= period.start or schedule.in_trial(sub, period):
        return None
    if sub.billed_through is not None and sub.billed_through >= period.end:
        return None
    return period


async def accrued_lines(
    session: AsyncSession, plan: Plan, sub: Subscription, period: periods.Period, at: datetime
) -> list[lines.LineDraft]:
    """The period's usage lines so far (its usage known by ``at``), capped, never floored."""
    catalog = await load_catalog(session, [plan.id])
    meters = catalog.meters_of(plan)
    grouped = await customer_usage(
        session, sub.tenant_id, sub.customer_id, plan, meters, (period.start, period.end)
    )
    span = periods.Period(period.start, at)
    fees = await period_fees(
        session, sub.tenant_id, {sub.customer_id: plan}, meters, (period.start, period.end)
    )
    return lines.usage_so_far(
        plan, meters, period, sub.timezone, {}, dated=span, grouped=grouped, fees=fees.get(sub.customer_id)
    )
