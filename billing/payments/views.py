"""Payments as invoicing shows and checks them (``billing.invoicing.ports.InvoicePayments``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.ports import PaymentsByInvoice
from billing.invoicing.schemas import PaymentOut, RefundOut
from billing.payments.models import Payment, Refund
from billing.payments.schemas import payment_out, refund_out


class InvoicePaymentsView:
    async def payments_of(self, session: AsyncSession, invoice_ids: Sequence[str]) -> PaymentsByInvoice:
        payments: dict[str, list[PaymentOut]] = defaultdict(list)
        of_payments = sa.select(Payment).where(Payment.invoice_id.in_(invoice_ids))
        for payment in await session.scalars(of_payments.order_by(Payment.invoice_id, Payment.attempt)):
            payments[payment.invoice_id].append(payment_out(payment))
        refunds: dict[str, list[RefundOut]] = defaultdict(list)
        of_refunds = sa.select(Refund).where(Refund.invoice_id.in_(invoice_ids))
        for refund in await session.scalars(of_refunds.order_by(Refund.invoice_id, Refund.id)):
            refunds[refund.invoice_id].append(refund_out(refund))
        return payments, refunds

    async def pending_payment(self, session: AsyncSession, invoice_id: str) -> str | None:
        query = sa.select(Payment.id).where(Payment.invoice_id == invoice_id, Payment.status == "pending")
        return await session.scalar(query.limit(1))


PAYMENTS = InvoicePaymentsView()
