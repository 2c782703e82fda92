"""Issuing a credit note (``POST /v1/invoices/{id}/credit-notes``).

Everything but the provider call happens in one transaction under the invoice's lock: checks,
amounts, the number, the note, its effect on the invoice, the refund rows, the event and the
email. Two notes on one invoice therefore see each other's amounts, and a refused request writes
nothing (its number goes back to the sequence). The provider is called after the commit, as
every refund is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox
from billing.core.context import AppContext
from billing.core.errors import Conflict, FieldError, Forbidden, ValidationFailed
from billing.core.ids import new_id
from billing.credit_notes import amounts, effects, facts
from billing.credit_notes.models import CreditNote, CreditNoteLine
from billing.credit_notes.numbers import next_number
from billing.credit_notes.queries import get_note, notes_out
from billing.credit_notes.schemas import CreditNoteCreate, CreditNoteOut
from billing.invoicing.invoices import get_invoice
from billing.invoicing.models import Invoice
from billing.notifications.queue import queue_notification
from billing.payments.attempts import call_lease
from billing.payments.models import Refund
from billing.payments.refunds import RefundCall, send_refunds
from billing.payments.views import PAYMENTS
from billing.tenants.models import Tenant
from billing.tenants.service import get_tenant

TOPIC = "credit_note.created"


@dataclass(frozen=True)
class Issued:
    note_id: str
    tenant: Tenant
    refund_calls: list[RefundCall]


async def issue_credit_note(
    ctx: AppContext,
    tenant_id: str,
    invoice_id: str,
    data: CreditNoteCreate,
    *,
    actor: str,
    may_refund: bool,
) -> CreditNoteOut:
    """Issue the note; ``may_refund``: the caller may refund through the provider (admin)."""
    check_request(data, may_refund=may_refund)
    at = ctx.clock.now()
    async with ctx.database.transaction() as session:
        issued = await issue(
            session,
            tenant_id,
            invoice_id,
            data,
            actor=actor,
            at=at,
            lease=call_lease(ctx.settings),
        )
    if issued.refund_calls:
        refunds = await send_refunds(ctx, issued.tenant, issued.refund_calls)
        await announce_refund(ctx, tenant_id, issued.note_id, refunds)
    async with ctx.database.read() as session:
        return (await notes_out(session, [await get_note(session, tenant_id, issued.note_id)]))[0]


def check_request(data: CreditNoteCreate, *, may_refund: bool) -> None:
    if (data.lines is None) == (data.amount is None):
        raise ValidationFailed(
            "Give exactly one of lines or amount",
            errors=[
                FieldError("lines", "exactly one of lines or amount"),
                FieldError("amount", "exactly one of lines or amount"),
            ],
        )
    if data.refund == "provider" and not may_refund:
        raise Forbidden("A refund through the payment provider needs an admin key")


async def issue(
    session: AsyncSession,
    tenant_id: str,
    invoice_id: str,
    data: CreditNoteCreate,
    *,
    actor: str,
    at: datetime,
    lease: timedelta,
) -> Issued:
    invoice = await get_invoice(session, tenant_id, invoice_id, lock=True)
    await _check_invoice(session, invoice, data)
    computed = await _amounts(session, invoice, data)
    credited = invoice.pre_payment_credit_notes_amount + invoice.post_payment_credit_notes_amount
    amounts.check_invoice_room(computed.total, credited, invoice.total)
    if invoice.status == "paid" and data.refund == "provider":
        await effects.check_refundable(session, invoice, computed.total)
    tenant = await get_tenant(session, tenant_id)
    note = await _write(session, tenant, invoice, data, computed, at=at)
    calls = await effects.apply(session, tenant, invoice, note, actor=actor, at=at, lease=lease)
    await _announce(session, invoice, note, at=at)
    return Issued(note.id, tenant, calls)


async def _check_invoice(session: AsyncSession, invoice: Invoice, data: CreditNoteCreate) -> None:
    if invoice.status not in ("open", "paid"):
        raise Conflict(
            f"Only an open or paid invoice takes a credit note; this one is {invoice.status}",
            code="invalid_transition",
        )
    pending = await PAYMENTS.pending_payment(session, invoice.id)
    if pending is not None:
        raise Conflict(
            f"Payment {pending} of this invoice is pending; issue the credit note once its outcome is known",
            code="payment_in_progress",
        )
    if invoice.status == "open" and data.refund != "none":
        message = "an open invoice takes refund none only: the note reduces what is due"
        raise ValidationFailed(
            f"refund: {message}", code="refund_requires_paid_invoice", errors=[FieldError("refund", message)]
        )


async def _amounts(session: AsyncSession, invoice: Invoice, data: CreditNoteCreate) -> amounts.NoteAmounts:
    if data.lines is not None:
        return amounts.by_lines(await facts.line_credits(session, invoice, data.lines))
    assert data.amount is not None
    invoice_taxes = facts.taxes(invoice.total_tax_amounts or [])
    description = f"Credit on invoice {invoice.number}"
    return amounts.by_amount(data.amount, invoice.total, invoice_taxes, description)


async def _write(
    session: AsyncSession,
    tenant: Tenant,
    invoice: Invoice,
    data: CreditNoteCreate,
    computed: amounts.NoteAmounts,
    *,
    at: datetime,
) -> CreditNote:
    pre, post = amounts.split(
        computed.total, invoice_open=invoice.status == "open", amount_due=invoice.amount_due
    )
    note = CreditNote(
        id=new_id("cn"),
        tenant_id=invoice.tenant_id,
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        number=await next_number(session, tenant.id, tenant.invoice_prefix),
        currency=invoice.currency,
        reason=data.reason,
        refund=data.refund,
        memo=data.memo,
        status="issued",
        subtotal=computed.subtotal,
        tax_total=computed.tax_total,
        total=computed.total,
        pre_payment_amount=pre,
        post_payment_amount=post,
        created_at=at,
    )
    session.add(note)
    session.add_all(
        CreditNoteLine(
            credit_note_id=note.id,
            position=position,
            invoice_line=line.invoice_line,
            description=line.description[:500],
            amount=line.amount,
            tax_amounts=[
                {"tax_rate": t.tax_rate, "amount": t.amount, "inclusive": t.inclusive} for t in line.taxes
            ],
        )
        for position, line in enumerate(computed.lines)
    )
    return note


async def _announce(session: AsyncSession, invoice: Invoice, note: CreditNote, *, at: datetime) -> None:
    """``credit_note.created`` with the note as it is now, and the customer's email."""
    (out,) = await notes_out(session, [note])
    wire = msgspec.to_builtins(out)
    payload = {
        "credit_note_id": note.id,
        "invoice_id": invoice.id,
        "customer_id": note.customer_id,
        "object": wire,
    }
    await outbox.emit(session, tenant_id=note.tenant_id, topic=TOPIC, payload=payload, now=at)
    await queue_notification(
        session,
        tenant_id=note.tenant_id,
        customer_id=note.customer_id,
        kind="credit_note_issued",
        dedupe_key=f"credit_note_issued:{note.id}",
        data={"invoice_id": invoice.id, "credit_note": wire},
        at=at,
    )


async def announce_refund(ctx: AppContext, tenant_id: str, note_id: str, refunds: list[Refund]) -> None:
    """Tell the customer what the provider refunded for the note (once, whatever succeeded)."""
    refunded = sum(refund.amount for refund in refunds if refund.status == "succeeded")
    if refunded == 0:
        return
    async with ctx.database.transaction() as session:
        note = await get_note(session, tenant_id, note_id)
        (out,) = await notes_out(session, [note])
        await queue_notification(
            session,
            tenant_id=tenant_id,
            customer_id=note.customer_id,
            kind="refund_issued",
            dedupe_key=f"refund_issued:{note.id}",
            data={
                "invoice_id": note.invoice_id,
                "credit_note": msgspec.to_builtins(out),
                "refund": {"amount": refunded},
            },
            at=ctx.clock.now(),
        )
