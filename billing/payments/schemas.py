"""Payments and refunds on the wire (their shapes are part of the invoice's, in invoicing)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from billing.invoicing.schemas import PaymentOut, RefundOut
from billing.payments.models import Payment, Refund


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    # None refunds everything that is left.
    amount: Annotated[int, msgspec.Meta(gt=0, le=10**15)] | None = None


def payment_out(payment: Payment) -> PaymentOut:
    return PaymentOut(
        id=payment.id,
        invoice=payment.invoice_id,
        customer=payment.customer_id,
        status=payment.status,
        amount=payment.amount,
        currency=payment.currency,
        attempt=payment.attempt,
        reason=payment.reason,
        provider=payment.provider,
        provider_payment_id=payment.provider_payment_id,
        payment_method=payment.payment_method,
        failure_code=payment.failure_code,
        decline_code=payment.decline_code,
        decline_type=payment.decline_type,
        failure_message=payment.failure_message,
        created_at=payment.created_at,
        completed_at=payment.completed_at,
        flagged_at=payment.flagged_at,
    )


def refund_out(refund: Refund) -> RefundOut:
    return RefundOut(
        id=refund.id,
        invoice=refund.invoice_id,
        payment=refund.payment_id,
        status=refund.status,
        amount=refund.amount,
        currency=refund.currency,
        provider_refund_id=refund.provider_refund_id,
        failure_code=refund.failure_code,
        failure_message=refund.failure_message,
        created_at=refund.created_at,
        completed_at=refund.completed_at,
        flagged_at=refund.flagged_at,
    )
