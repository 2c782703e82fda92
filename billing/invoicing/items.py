"""Invoice items: one-off amounts (negative ones are adjustments) for a customer's invoices.

An item is ``pending`` until an invoice takes it (``item_lines``), or joins a draft at once when
created with ``invoice``; then it is ``invoiced`` there for good (voiding the invoice waives it).
Only a pending item can be deleted; it is kept as ``deleted`` so that its id still answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.archived import ensure_not_archived
from billing.customers.models import Customer
from billing.customers.service import get_customer, lock_customer
from billing.invoicing import invoices
from billing.invoicing.item_schemas import InvoiceItemCreate, PeriodIn
from billing.invoicing.models import Invoice, InvoiceItem, Subscription
from billing.invoicing.recompute import refresh_draft
from billing.invoicing.subscriptions import get_subscription

ITEM_STATUSES = ("pending", "invoiced", "deleted")


def new_item(
    customer: Customer,
    *,
    description: str,
    amount: int,
    period: PeriodIn | None,
    metadata: dict[str, str] | None,
    now: datetime,
    field: str = "",
) -> InvoiceItem:
    """A validated item for ``customer`` in its currency (``field`` prefixes the error paths)."""
    if amount == 0:
        raise ValidationFailed.field(f"{field}amount", "must be a non-zero integer")
    if period is not None and period.start > period.end:
        raise ValidationFailed.field(f"{field}period", "start must not be after end")
    return InvoiceItem(
        id=new_id("ii"),
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        status="pending",
        description=validation.text(f"{field}description", description, max_length=500),
        amount=amount,
        currency=customer.currency,
        period_start=period.start if period else now,
        period_end=period.end if period else now,
        metadata_=validation.validate_metadata(f"{field}metadata", metadata or {}),
        created_at=now,
        updated_at=now,
    )


async def create_item(
    session: AsyncSession, tenant_id: str, data: InvoiceItemCreate, *, now: datetime
) -> InvoiceItem:
    customer = await lock_customer(session, await get_customer(session, tenant_id, data.customer))
    ensure_not_archived(customer)
    item = new_item(
        customer,
        description=data.description,
        amount=data.amount,
        period=data.period,
        metadata=data.metadata,
        now=now,
    )
    if data.currency is not None and validation.currency("currency", data.currency) != customer.currency:
        raise ValidationFailed(
            f"The customer is billed in {customer.currency}, not {data.currency}", code="currency_mismatch"
        )
    if data.invoice is None:
        session.add(item)
        await session.flush()
        return item
    draft, sub = await lock_draft(session, tenant_id, data.invoice)
    if draft.customer_id != customer.id:
        raise ValidationFailed.field("invoice", "is an invoice of another customer")
    if draft.currency != item.currency:
        raise ValidationFailed(f"Invoice {draft.id} is in {draft.currency}", code="currency_mismatch")
    item.status, item.invoice_id = "invoiced", draft.id
    session.add(item)
    await session.flush()
    await refresh_draft(session, draft, sub, at=now)
    return item


async def lock_draft(
    session: AsyncSession, tenant_id: str, invoice_id: str
) -> tuple[Invoice, Subscription | None]:
    """The tenant's draft, locked as finalizing locks it (its subscription, or its own row for a
    standalone invoice), with its subscription; 409 invoice_not_draft once it is finalized."""
    invoice = await invoices.get_invoice(session, tenant_id, invoice_id)
    sub = None
    if invoice.subscription_id is None:
        await session.refresh(invoice, with_for_update=True)
    else:
        sub = await get_subscription(session, tenant_id, invoice.subscription_id, lock=True)
        await session.refresh(invoice)
    if invoice.status != "draft":
        raise Conflict(f"Invoice {invoice.id} is {invoice.status}, not a draft", code="invoice_not_draft")
    return invoice, sub


async def get_item(session: AsyncSession, tenant_id: str, item_id: str) -> InvoiceItem:
    item = (
        await session.scalars(
            sa.select(InvoiceItem).where(InvoiceItem.tenant_id == tenant_id, InvoiceItem.id == item_id)
        )
    ).first()
    if item is None:
        raise NotFound(f"No invoice item {item_id}")
    return item


async def list_items(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    customer_id: str | None = None,
    status: str | None = None,
) -> tuple[Sequence[InvoiceItem], bool]:
    query = sa.select(InvoiceItem).where(InvoiceItem.tenant_id == tenant_id)
    if customer_id is not None:
        query = query.where(InvoiceItem.customer_id == customer_id)
    if status is not None:
        query = query.where(InvoiceItem.status == status)
    return await fetch_page(session, query, InvoiceItem.id, page)


async def delete_item(session: AsyncSession, tenant_id: str, item_id: str, *, now: datetime) -> InvoiceItem:
    """Delete a pending item; 409 invalid_transition once an invoice has it (or it is deleted)."""
    item = await get_item(session, tenant_id, item_id)
    deleted = await session.execute(
        sa.update(InvoiceItem)
        .where(InvoiceItem.id == item.id, InvoiceItem.status == "pending")
        .values(status="deleted", deleted_at=now, updated_at=now)
        .returning(InvoiceItem.id)
    )
    if deleted.first() is None:
        await session.refresh(item)
        raise Conflict(
            f"Invoice item {item.id} is {item.status}; only a pending one can be deleted",
            code="invalid_transition",
        )
    await session.refresh(item)
    return item
