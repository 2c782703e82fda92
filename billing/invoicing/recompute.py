"""Recomputing drafts when late events arrive, and billing late events of ended subscriptions.

Ingestion flags a subscription (``usage_changed_at``) when it accepts an event for a period that
is already closed. Its drafts are then recomputed from the usage as it is now; if it has no draft
left and no period to close, the late events get an invoice of their own (with no period of its
own: its period_start equals its period_end), so that nothing accepted is ever left unbilled.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import invoices, item_lines, lines, periods
from billing.invoicing.catalog import load_catalog
from billing.invoicing.close import draft_row, insert_drafts
from billing.invoicing.fee_tallies import period_fees
from billing.invoicing.grouped_usage import customer_usage
from billing.invoicing.handover_late import predecessor_late_lines, successor_taking_late
from billing.invoicing.late import late_periods
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.terms import InvoiceTerms, Subject
from billing.invoicing.threshold_billed import already_billed_lines
from billing.tenants.models import Tenant


async def draft_lines(
    session: AsyncSession, sub: Subscription, start: datetime, end: datetime
) -> list[lines.LineDraft]:
    """What a draft for [start, end) holds now: its usage from the rollups, and estimated late
    usage (only that when start == end: a late-usage-only invoice)."""
    catalog = await load_catalog(session, [sub.plan_id])
    plan = catalog.plans[sub.plan_id]
    meters = catalog.meters_of(plan)
    drafted: list[lines.LineDraft] = []
    if start < end:
        period = periods.Period(start, end)
        grouped = await customer_usage(
            session, sub.tenant_id, sub.customer_id, plan, meters, (period.start, period.end)
        )
        fees = await period_fees(
            session, sub.tenant_id, {sub.customer_id: plan}, meters, (period.start, period.end)
        )
        drafted = lines.period_lines(
            plan, meters, period, sub, {}, grouped=grouped, fees=fees.get(sub.customer_id)
        )
        drafted += await already_billed_lines(session, plan, sub, period)
    late = await late_periods(session, sub, plan, meters, before=start)
    return drafted + lines.late_lines(plan, meters, sub, late) + await predecessor_late_lines(session, sub)


async def recompute(
    session: AsyncSession,
    tenant: Tenant,
    sub: Subscription,
    *,
    at: datetime,
    actor: str,
    known: Mapping[Subject, InvoiceTerms] | None = None,
) -> int:
    """Recompute the (locked) subscription's drafts; return how many drafts changed or were created.
    ``known``: the drafts' terms, loaded in bulk for a batch of subscriptions."""
    sub.usage_changed_at = None
    drafts = list(
        await session.scalars(
            sa.select(Invoice)
            .where(Invoice.subscription_id == sub.id, Invoice.status == "draft")
            .order_by(Invoice.period_start)
        )
    )
    for draft in drafts:
        await refresh_draft(session, draft, sub, at=at, known=known)
    if drafts or sub.next_period_end is not None:
        return len(drafts)  # an open period's invoice will pick the late usage up when it closes
    successor = await successor_taking_late(session, sub)
    if successor is not None:
        successor.usage_changed_at = at  # its drafts, or its next one, bill the late usage
        return 0
    return await _late_only_invoice(session, tenant, sub, at=at, actor=actor)


async def refresh_draft(
    session: AsyncSession,
    draft: Invoice,
    sub: Subscription | None,
    *,
    at: datetime,
    known: Mapping[Subject, InvoiceTerms] | None = None,
) -> None:
    """Recompute a draft's lines as they are now: its subscription's usage, then its items."""
    drafted = await draft_lines(session, sub, draft.period_start, draft.period_end) if sub else []
    drafted += await item_lines.attached_lines(session, draft.id)
    ordered = lines.in_invoice_order(drafted, draft.period_start)
    await invoices.replace_lines(session, draft, ordered, at, known=known)


async def _late_only_invoice(
    session: AsyncSession, tenant: Tenant, sub: Subscription, *, at: datetime, actor: str
) -> int:
    drafted = await draft_lines(session, sub, at, at)
    if not drafted:
        return 0
    catalog = await load_catalog(session, [sub.plan_id])
    row = draft_row(tenant, sub, catalog.plans[sub.plan_id].currency, at, at, at)
    return await insert_drafts(session, [(row, drafted)], actor, at)
