"""Payment attempts as the tenant reads them: the filtered list, and one attempt."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import NotFound
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.service import get_customer
from billing.payments.models import Payment


async def list_payments(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    customer: str | None = None,
    invoice_id: str | None = None,
    status: str | None = None,
    flagged: bool | None = None,
) -> tuple[list[Payment], bool]:
    """The tenant's payment attempts, newest first; ``customer`` is an id or an external_id, and
    ``flagged`` keeps those pending for more than a day (or, False, the others)."""
    customer_id = customer and (await get_customer(session, tenant_id, customer)).id
    query = _filtered(tenant_id, customer_id, invoice_id, status, flagged)
    return await fetch_page(session, query, Payment.id, page)


async def get_payment(session: AsyncSession, tenant_id: str, payment_id: str) -> Payment:
    payment = await session.get(Payment, payment_id)
    if payment is None or payment.tenant_id != tenant_id:
        raise NotFound(f"No payment {payment_id}")
    return payment


def _filtered(
    tenant_id: str, customer_id: str | None, invoice: str | None, status: str | None, flagged: bool | None
) -> sa.Select[Payment]:
    query = sa.select(Payment).where(Payment.tenant_id == tenant_id)
    if customer_id is not None:
        query = query.where(Payment.customer_id == customer_id)
    if invoice is not None:
        query = query.where(Payment.invoice_id == invoice)
    if status is not None:
        query = query.where(Payment.status == status)
    if flagged is not None:
        query = query.where(Payment.flagged_at.is_not(None) if flagged else Payment.flagged_at.is_(None))
    return query
