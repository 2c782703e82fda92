"""Standalone invoices (``POST /v1/invoices``) and what can change on any invoice (``PATCH``).

A standalone invoice has no subscription: its lines are the items sent with it, its period is
the instant of its creation, and it is finalized after the grace period like any draft (or only
by hand with ``auto_finalize: false``). The customer's pending items stay pending (as Stripe's
``pending_invoice_items_behavior: exclude``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.errors import ValidationFailed
from billing.core.ids import new_id
from billing.customers.service import get_customer
from billing.invoicing import invoices
from billing.invoicing.close import insert_drafts
from billing.invoicing.item_lines import item_line
from billing.invoicing.item_schemas import InvoiceCreate, InvoicePatch
from billing.invoicing.items import lock_draft, new_item
from billing.invoicing.models import Invoice
from billing.tenants.models import Tenant

MEMO_MAX_LENGTH = 2000


async def create_invoice(
    session: AsyncSession, tenant: Tenant, data: InvoiceCreate, *, now: datetime, actor: str
) -> Invoice:
    customer = await get_customer(session, tenant.id, data.customer)
    memo = _memo(data.memo)
    metadata = validation.validate_metadata("metadata", data.metadata or {})
    items = [
        new_item(
            customer,
            description=item.description,
            amount=item.amount,
            period=item.period,
            metadata=item.metadata,
            now=now,
            field=f"items[{index}].",
        )
        for index, item in enumerate(data.items)
    ]
    # Ids made in one millisecond are not ordered: sorted, they keep the order the items came in.
    for item, item_id in zip(items, sorted(item.id for item in items), strict=True):
        item.id = item_id
    row: dict[str, object] = {
        "id": new_id("inv"),
        "tenant_id": tenant.id,
        "customer_id": customer.id,
        "subscription_id": None,
        "billing_reason": "manual",
        "number": None,
        "status": "draft",
        "currency": customer.currency,
        "period_start": now,
        "period_end": now,
        "amount_paid": 0,
        "grace_ends_at": now + timedelta(hours=tenant.grace_period_hours),
        "computed_at": now,
        "created_at": now,
        "updated_at": now,
        "memo": memo,
        "metadata_": metadata,
        "auto_finalize": data.auto_finalize,
    }
    await insert_drafts(
        session, [(row, [item_line(item) for item in items])], actor, now, pending_items=False
    )
    for item in items:
        item.status, item.invoice_id = "invoiced", str(row["id"])
    session.add_all(items)
    await session.flush()
    return await invoices.get_invoice(session, tenant.id, str(row["id"]))


async def update_invoice(
    session: AsyncSession, tenant_id: str, invoice_id: str, patch: InvoicePatch, *, now: datetime
) -> Invoice:
    """``memo`` only on a draft (409 invoice_not_draft), ``metadata`` at any time; every field is
    checked before any changes."""
    if patch.memo is UNSET:
        invoice = await invoices.get_invoice(session, tenant_id, invoice_id, lock=True)
    else:
        invoice, _ = await lock_draft(session, tenant_id, invoice_id)
    changes: dict[str, object] = {}
    if patch.memo is not UNSET:
        changes["memo"] = _memo(patch.memo)
    if patch.metadata is not UNSET:
        changes["metadata_"] = validation.validate_metadata("metadata", patch.metadata or {})
    for attribute, value in changes.items():
        setattr(invoice, attribute, value)
    invoice.updated_at = now
    await session.flush()
    return invoice


def _memo(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MEMO_MAX_LENGTH:
        raise ValidationFailed.field("memo", f"must be at most {MEMO_MAX_LENGTH} characters")
    return value
