"""What a credit note does to its invoice and to the customer's money.

On an open invoice it takes its pre-payment amount off what is due, and settles the invoice
(``invoice.paid``, marked as paid by a credit note) when nothing is left. On a paid invoice its
``refund`` decides: refund rows through the provider that took the money (committed before the
provider is called, as every refund), a promotional credit grant, or nothing (settled outside).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import FieldError, ValidationFailed
from billing.credit_notes.models import CreditNote
from billing.credits.grants import grant_for_credit_note
from billing.customers.models import Customer
from billing.invoicing.invoices import record_status, settle_amount_due
from billing.invoicing.models import Invoice
from billing.payments.refunds import RefundCall, open_refunds, refund_calls, refundable
from billing.payments.views import PAYMENTS
from billing.tenants.models import Tenant


async def check_refundable(session: AsyncSession, invoice: Invoice, total: int) -> None:
    """422 ``refund_exceeds_payments`` unless ``total`` is left of what was paid (pending refunds
    count as refunded)."""
    left = sum((await refundable(session, invoice.id)).values())
    if total > left:
        message = f"at most {left} of what was paid is left to refund"
        raise ValidationFailed(
            f"refund: {message}", code="refund_exceeds_payments", errors=[FieldError("refund", message)]
        )


async def apply(
    session: AsyncSession,
    tenant: Tenant,
    invoice: Invoice,
    note: CreditNote,
    *,
    actor: str,
    at: datetime,
    lease: timedelta,
) -> list[RefundCall]:
    """Book the note on its (locked) invoice and settle it; the provider refunds to call once the
    caller has committed."""
    invoice.pre_payment_credit_notes_amount += note.pre_payment_amount
    invoice.post_payment_credit_notes_amount += note.post_payment_amount
    invoice.credit_note_ids = [*(invoice.credit_note_ids or []), note.id]
    invoice.updated_at = at
    if invoice.status == "open":
        await _reduce_due(session, invoice, note, at=at)
        return []
    if note.refund == "provider":
        refunds = await open_refunds(session, tenant, invoice, note.total, actor=actor, at=at, lease=lease)
        note.refund_id = refunds[0].id
        return await refund_calls(session, refunds)
    if note.refund == "credit_balance":
        note.credit_grant_id = await _grant(session, note, at=at)
    return []


async def _reduce_due(session: AsyncSession, invoice: Invoice, note: CreditNote, *, at: datetime) -> None:
    settle_amount_due(invoice)
    if invoice.amount_due > 0:
        return
    invoice.paid_at = at
    await record_status(
        session,
        invoice,
        "paid",
        at=at,
        actor=f"credit_note:{note.id}",
        payments=PAYMENTS,
        details={"paid_by": "credit_note", "credit_note_id": note.id},
    )


async def _grant(session: AsyncSession, note: CreditNote, *, at: datetime) -> str:
    customer = await session.get_one(Customer, note.customer_id)
    grant = await grant_for_credit_note(
        session,
        customer,
        amount=note.total,
        currency=note.currency,
        name=f"Credit note {note.number}",
        credit_note_id=note.id,
        at=at,
    )
    return grant.id
