"""Credit note shapes on the wire."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from billing.credit_notes.models import CreditNote, CreditNoteLine

Reason = Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory", "other"]
RefundKind = Literal["none", "provider", "credit_balance"]
PositiveAmount = Annotated[int, msgspec.Meta(gt=0)]


class LineIn(msgspec.Struct, forbid_unknown_fields=True):
    invoice_line: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    amount: PositiveAmount


class CreditNoteCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of ``lines`` (amounts of lines' nets) or ``amount`` (the note's total)."""

    reason: Reason
    refund: RefundKind
    lines: Annotated[list[LineIn], msgspec.Meta(min_length=1, max_length=100)] | None = None
    amount: PositiveAmount | None = None
    memo: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class TaxAmountOut(msgspec.Struct):
    tax_rate: str
    amount: int


class CreditNoteLineOut(msgspec.Struct):
    invoice_line: str | None
    description: str
    amount: int
    tax_amounts: list[TaxAmountOut]


class CreditNoteOut(msgspec.Struct):
    id: str
    number: str
    invoice: str
    customer: str
    currency: str
    reason: str
    refund: str
    memo: str | None
    status: str
    lines: list[CreditNoteLineOut]
    subtotal: int
    tax_total: int
    total: int
    pre_payment_amount: int
    post_payment_amount: int
    refund_id: str | None
    credit_grant: str | None
    created_at: datetime
    object: str = "credit_note"


def line_out(line: CreditNoteLine) -> CreditNoteLineOut:
    return CreditNoteLineOut(
        invoice_line=line.invoice_line,
        description=line.description,
        amount=line.amount,
        tax_amounts=[TaxAmountOut(str(t["tax_rate"]), int(t["amount"])) for t in line.tax_amounts],
    )


def credit_note_out(note: CreditNote, lines: Sequence[CreditNoteLine]) -> CreditNoteOut:
    return CreditNoteOut(
        id=note.id,
        number=note.number,
        invoice=note.invoice_id,
        customer=note.customer_id,
        currency=note.currency,
        reason=note.reason,
        refund=note.refund,
        memo=note.memo,
        status=note.status,
        lines=[line_out(line) for line in lines],
        subtotal=note.subtotal,
        tax_total=note.tax_total,
        total=note.total,
        pre_payment_amount=note.pre_payment_amount,
        post_payment_amount=note.post_payment_amount,
        refund_id=note.refund_id,
        credit_grant=note.credit_grant_id,
        created_at=note.created_at,
    )
