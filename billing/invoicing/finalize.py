"""Finalizing a draft: bill exactly the events it marks, number it, freeze it.

The subscription row is locked first, so the billing run, a manual finalize and a void of the
same subscription's invoices take turns. Earlier drafts of the subscription are finalized first,
in period order, so that an event is only ever late for a period that is already invoiced.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import Conflict
from billing.customers.models import Customer
from billing.invoicing import credit_terms, discount_terms, invoices, item_lines, lines, periods
from billing.invoicing.catalog import load_catalog
from billing.invoicing.fee_tallies import marked_fees
from billing.invoicing.grouped_usage import grouped_meters
from billing.invoicing.handover_late import predecessor_late_lines, waive_predecessor_events
from billing.invoicing.late import finalized_periods, late_periods, mark_events, marked_usage
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.ports import NO_PAYMENTS_YET
from billing.invoicing.subscriptions import get_subscription
from billing.invoicing.threshold_billed import already_billed_lines
from billing.tenants.models import Tenant


async def finalize(
    session: AsyncSession, tenant: Tenant, invoice: Invoice, *, at: datetime, actor: str
) -> list[Invoice]:
    """Finalize ``invoice`` and every earlier draft of its subscription; return them in order."""
    if invoice.subscription_id is None:
        await session.refresh(invoice, with_for_update=True)
        _check_draft(invoice)
        if invoice.billing_reason != "credit_grant":  # its one credit_purchase line is fixed
            await invoices.replace_lines(
                session, invoice, await item_lines.attached_lines(session, invoice.id), at, finalizing=True
            )
        await _open(session, tenant, invoice, at=at, actor=actor)
        return [invoice]
    sub = await get_subscription(session, tenant.id, invoice.subscription_id, lock=True)
    await session.refresh(invoice)
    _check_draft(invoice)
    earlier = await session.scalars(
        sa.select(Invoice)
        .where(
            Invoice.subscription_id == sub.id,
            Invoice.status == "draft",
            Invoice.period_start < invoice.period_start,
        )
        .order_by(Invoice.period_start)
    )
    done = [*earlier, invoice]
    for draft in done:
        await _finalize_one(session, tenant, sub, draft, at=at, actor=actor)
    return done


def _check_draft(invoice: Invoice) -> None:
    if invoice.status != "draft":
        raise Conflict(f"Invoice {invoice.id} is {invoice.status}, not a draft", code="invoice_not_draft")


def _is_last(sub: Subscription, invoice: Invoice) -> bool:
    return sub.cancel_at is not None and invoice.period_end >= sub.cancel_at


def _until(sub: Subscription, invoice: Invoice) -> datetime | None:
    """The end of what an invoice bills; for the last period of a canceled subscription, none,
    so that an event that raced the cancellation past its end is billed too. A subscription
    replaced by a plan change stops at the change: later events belong to its successor."""
    if not _is_last(sub, invoice):
        return invoice.period_end
    return sub.cancel_at if sub.end_reason == "replaced" else None


async def void_draft_events(session: AsyncSession, sub: Subscription, invoice: Invoice) -> None:
    """A voided draft keeps the events it showed (its period's, and late ones of periods already
    finalized), so that voiding waives them rather than moving them to the next invoice. Events
    of earlier periods that are still drafts stay with those drafts."""
    await mark_events(session, sub, invoice.id, _until(sub, invoice), since=invoice.period_start)
    for period in await finalized_periods(session, sub.id):
        if period.end <= invoice.period_start:
            await mark_events(session, sub, invoice.id, period.end, since=period.start)
    await waive_predecessor_events(session, sub, invoice.id)


async def _finalize_one(
    session: AsyncSession, tenant: Tenant, sub: Subscription, invoice: Invoice, *, at: datetime, actor: str
) -> None:
    # Its period's events and earlier late ones: earlier drafts are finalized by now.
    await mark_events(session, sub, invoice.id, _until(sub, invoice))
    catalog = await load_catalog(session, [sub.plan_id])
    plan = catalog.plans[sub.plan_id]
    meters = catalog.meters_of(plan)
    drafted: list[lines.LineDraft] = []
    if invoice.period_start < invoice.period_end:  # a late-usage-only invoice has no period of its own
        period = periods.Period(invoice.period_start, invoice.period_end)
        grouped = await marked_usage(
            session,
            sub,
            meters,
            period.start,
            _until(sub, invoice),
            grouped_meters(plan),
            invoice_id=invoice.id,
        )
        fees = await marked_fees(
            session, sub, plan, meters, period.start, _until(sub, invoice), invoice_id=invoice.id
        )
        drafted = lines.period_lines(plan, meters, period, sub, {}, grouped=grouped, fees=fees)
        drafted += await already_billed_lines(session, plan, sub, period)
    late = await late_periods(session, sub, plan, meters, before=invoice.period_start, invoice_id=invoice.id)
    drafted += lines.late_lines(plan, meters, sub, late)
    drafted += await predecessor_late_lines(session, sub, invoice_id=invoice.id)
    drafted += await item_lines.attached_lines(session, invoice.id)
    ordered = lines.in_invoice_order(drafted, invoice.period_start)
    await invoices.replace_lines(session, invoice, ordered, at, finalizing=True)
    await _open(session, tenant, invoice, at=at, actor=actor)


async def open_at_once(
    session: AsyncSession,
    tenant: Tenant,
    invoice: Invoice,
    drafted: list[lines.LineDraft],
    *,
    at: datetime,
    actor: str,
) -> None:
    """Finalize a draft just made with these lines (a threshold invoice: no grace period)."""
    await invoices.replace_lines(session, invoice, drafted, at, finalizing=True)
    await _open(session, tenant, invoice, at=at, actor=actor)


async def _open(session: AsyncSession, tenant: Tenant, invoice: Invoice, *, at: datetime, actor: str) -> None:
    """Number the invoice and open it, due after the net terms, with the credits and discount its
    amounts were computed with (in this transaction, with the grants locked); paid at once when
    nothing is due, and a total below zero left to the customer as a credit grant."""
    days = await net_terms_days(session, tenant, invoice)
    invoice.number = await invoices.next_number(session, tenant.id, tenant.invoice_prefix)
    invoice.finalized_at = at
    invoice.due_at = at + timedelta(days=days)
    await invoices.record_status(session, invoice, "open", at=at, actor=actor, payments=NO_PAYMENTS_YET)
    # Once open: a numbered draft breaks a constraint if anything below flushes it.
    applications = [(str(grant), int(amount)) for grant, amount in invoice.credit_applications]
    if applications:
        await credit_terms.apply(session, invoice, applications, at=at)
    if invoice.discount_id is not None:
        await discount_terms.redeemed(session, invoice.discount_id, invoice_id=invoice.id, at=at)
    if invoice.total < 0:
        await credit_terms.grant_negative_total(session, invoice, at=at)
    if invoice.amount_due == 0:
        invoice.paid_at = at
        await invoices.record_status(session, invoice, "paid", at=at, actor=actor, payments=NO_PAYMENTS_YET)
    await session.flush()


async def net_terms_days(session: AsyncSession, tenant: Tenant, invoice: Invoice) -> int:
    """The customer's net terms, else the tenant's; threshold and credit-grant invoices are due at once."""
    if invoice.billing_reason in ("threshold", "credit_grant"):
        return 0
    customer = await session.get_one(Customer, invoice.customer_id)
    return tenant.net_terms_days if customer.net_terms_days is None else customer.net_terms_days
