"""What a person does to one invoice: read, finalize, void, mark uncollectible.

The API and the finance pages both call these, so a button and a POST take the same path.
``payments`` is the payments domain's view of the invoice (``billing.invoicing.ports``).
"""

from __future__ import annotations

from billing.core.context import AppContext
from billing.invoicing import invoices, subscriptions
from billing.invoicing.finalize import finalize, void_draft_events
from billing.invoicing.ports import InvoicePayments
from billing.invoicing.schemas import InvoiceOut
from billing.tenants.service import get_tenant


async def read_invoice(
    ctx: AppContext, tenant_id: str, invoice_id: str, payments: InvoicePayments
) -> InvoiceOut:
    async with ctx.database.read() as session:
        invoice = await invoices.get_invoice(session, tenant_id, invoice_id)
        return (await invoices.invoices_out(session, [invoice], payments, now=ctx.clock.now()))[0]


async def finalize_now(
    ctx: AppContext, tenant_id: str, invoice_id: str, payments: InvoicePayments, *, actor: str
) -> InvoiceOut:
    async with ctx.database.transaction() as session:
        invoice = await invoices.get_invoice(session, tenant_id, invoice_id)
        tenant = await get_tenant(session, tenant_id)
        await finalize(session, tenant, invoice, at=ctx.clock.now(), actor=actor)
        return (await invoices.invoices_out(session, [invoice], payments, now=ctx.clock.now()))[0]


async def void_now(
    ctx: AppContext, tenant_id: str, invoice_id: str, payments: InvoicePayments, *, actor: str
) -> InvoiceOut:
    async with ctx.database.transaction() as session:
        invoice = await invoices.get_invoice(session, tenant_id, invoice_id)
        if invoice.subscription_id is None:
            await session.refresh(invoice, with_for_update=True)
        else:
            sub = await subscriptions.get_subscription(session, tenant_id, invoice.subscription_id, lock=True)
            await session.refresh(invoice)
            if invoice.status == "draft":
                await void_draft_events(session, sub, invoice)
            if invoice.threshold_multiple is not None:
                sub.usage_changed_at = ctx.clock.now()  # its draft bills the voided usage again
        # Its invoice items stay invoiced to it: voiding waives them.
        await invoices.void(session, invoice, at=ctx.clock.now(), actor=actor, payments=payments)
        return (await invoices.invoices_out(session, [invoice], payments, now=ctx.clock.now()))[0]


async def mark_uncollectible_now(
    ctx: AppContext, tenant_id: str, invoice_id: str, payments: InvoicePayments, *, actor: str
) -> InvoiceOut:
    async with ctx.database.transaction() as session:
        invoice = await invoices.get_invoice(session, tenant_id, invoice_id, lock=True)
        await invoices.mark_uncollectible(
            session, invoice, at=ctx.clock.now(), actor=actor, payments=payments
        )
        return (await invoices.invoices_out(session, [invoice], payments, now=ctx.clock.now()))[0]
