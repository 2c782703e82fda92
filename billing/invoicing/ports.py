"""What invoicing shows and checks of the payments made against its invoices.

An invoice on the wire lists its payment attempts and refunds, and an invoice with a payment in
flight cannot be voided. Payments sit above invoicing: it implements :class:`InvoicePayments`,
and the composition root hands that to the routes, which hand it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.schemas import PaymentOut, RefundOut

PaymentsByInvoice = tuple[dict[str, list[PaymentOut]], dict[str, list[RefundOut]]]


class InvoicePayments(Protocol):
    async def payments_of(self, session: AsyncSession, invoice_ids: Sequence[str]) -> PaymentsByInvoice:
        """The payment attempts and refunds of these invoices, by invoice id, oldest first."""
        ...

    async def pending_payment(self, session: AsyncSession, invoice_id: str) -> str | None:
        """The id of a payment of the invoice whose outcome is not known yet, if any."""
        ...


class NoPaymentsYet:
    """For invoices that cannot have been charged yet: drafts, and drafts being finalized."""

    async def payments_of(self, session: AsyncSession, invoice_ids: Sequence[str]) -> PaymentsByInvoice:
        return {}, {}

    async def pending_payment(self, session: AsyncSession, invoice_id: str) -> str | None:
        return None


NO_PAYMENTS_YET = NoPaymentsYet()
