"""``GET /v1/customers/{id}/upcoming-invoice``: what the current period would bill now."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import NotFound
from billing.customers.models import Customer
from billing.invoicing import invoices, item_lines, periods, schedule
from billing.invoicing.lines import in_invoice_order
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.recompute import draft_lines
from billing.invoicing.schemas import InvoiceOut, draft_line_out, invoice_out
from billing.invoicing.terms import terms_of
from billing.metering.models import Meter


async def upcoming_invoice(session: AsyncSession, customer: Customer, now: datetime) -> InvoiceOut:
    """The invoice the subscription's current period would produce from the usage so far."""
    subscriptions = await session.scalars(
        sa.select(Subscription).where(
            Subscription.tenant_id == customer.tenant_id, Subscription.customer_id == customer.id
        )
    )
    for sub in subscriptions:
        period = schedule.period_at(sub, now)
        if period is not None:
            return await _preview(session, customer, sub, period, now)
    raise NotFound(f"Customer '{customer.external_id}' has no subscription in effect now")


async def _preview(
    session: AsyncSession, customer: Customer, sub: Subscription, period: periods.Period, now: datetime
) -> InvoiceOut:
    drafted = await draft_lines(session, sub, period.start, period.end)
    drafted += await item_lines.pending_lines(session, customer.id, customer.currency)
    drafted = in_invoice_order(drafted, period.start)
    keys = dict(
        (
            await session.execute(
                sa.select(Meter.id, Meter.key).where(Meter.id.in_({d.meter_id for d in drafted}))
            )
        ).all()
    )
    # Never added to the session: a preview, shaped and totalled exactly as a stored invoice.
    preview = Invoice(
        id=None,
        tenant_id=customer.tenant_id,
        billing_reason=schedule.billing_reason(sub, period),
        status="upcoming",
        customer_id=customer.id,
        subscription_id=sub.id,
        currency=customer.currency,
        period_start=period.start,
        period_end=period.end,
        amount_paid=0,
        pre_payment_credit_notes_amount=0,
    )
    drafted = invoices.set_amounts(preview, drafted, await terms_of(session, preview, at=now))
    lines = [draft_line_out(line, keys.get(line.meter_id or "")) for line in drafted]
    return invoice_out(preview, lines, [], customer.external_id)
