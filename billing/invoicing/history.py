"""Whether a customer has billing history: anything billed in its currency, which then stays fixed."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.credits.models import CreditGrant
from billing.customers.models import Customer
from billing.invoicing.models import Invoice, InvoiceItem, Subscription


async def has_billing_history(session: AsyncSession, customer: Customer) -> bool:
    """Whether the customer has an invoice, an invoice item, a credit grant or a subscription (of
    any status); one query."""
    invoice = sa.select(Invoice.id).where(
        Invoice.tenant_id == customer.tenant_id, Invoice.customer_id == customer.id
    )
    subscription = sa.select(Subscription.id).where(
        Subscription.tenant_id == customer.tenant_id, Subscription.customer_id == customer.id
    )
    item = sa.select(InvoiceItem.id).where(
        InvoiceItem.tenant_id == customer.tenant_id, InvoiceItem.customer_id == customer.id
    )
    grant = sa.select(CreditGrant.id).where(
        CreditGrant.tenant_id == customer.tenant_id, CreditGrant.customer_id == customer.id
    )
    found = sa.or_(invoice.exists(), subscription.exists(), item.exists(), grant.exists())
    return bool(await session.scalar(sa.select(found)))
