"""Buying credit: a ``paid`` grant comes with a ``credit_grant`` invoice of one
``credit_purchase`` line (no discount, tax or credits), finalized at once and charged by the
payments run like any open invoice. The grant stays ``pending`` until that invoice is paid;
``invoices.record_status`` tells the credits domain when it is paid, voided or uncollectible.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.ids import new_id
from billing.credits import grants
from billing.credits.models import CreditGrant
from billing.credits.schemas import CreditGrantCreate
from billing.customers.archived import ensure_not_archived
from billing.customers.service import get_customer, lock_customer
from billing.invoicing import invoices
from billing.invoicing.close import insert_drafts
from billing.invoicing.finalize import finalize
from billing.invoicing.lines import LineDraft
from billing.invoicing.ports import InvoicePayments
from billing.tenants.models import Tenant


async def create_grant(
    session: AsyncSession,
    tenant: Tenant,
    customer_ref: str,
    data: CreditGrantCreate,
    *,
    now: datetime,
    actor: str,
) -> CreditGrant:
    customer = await lock_customer(session, await get_customer(session, tenant.id, customer_ref))
    ensure_not_archived(customer)
    invoice_id = new_id("inv") if data.category == "paid" else None
    grant = await grants.new_grant(session, customer, data, now=now, invoice_id=invoice_id)
    await grants.add_grant(session, grant, now=now)
    if invoice_id is not None:
        await _purchase_invoice(session, tenant, grant, invoice_id, now=now, actor=actor)
        await session.refresh(grant)
    return grant


async def _purchase_invoice(
    session: AsyncSession, tenant: Tenant, grant: CreditGrant, invoice_id: str, *, now: datetime, actor: str
) -> None:
    row: dict[str, object] = {
        "id": invoice_id,
        "tenant_id": tenant.id,
        "customer_id": grant.customer_id,
        "subscription_id": None,
        "billing_reason": "credit_grant",
        "number": None,
        "status": "draft",
        "currency": grant.currency,
        "period_start": now,
        "period_end": now,
        "amount_paid": 0,
        "grace_ends_at": now + timedelta(hours=tenant.grace_period_hours),
        "computed_at": now,
        "created_at": now,
        "updated_at": now,
        "metadata_": {},
        "auto_finalize": True,
    }
    line = LineDraft(
        kind="credit_purchase",
        meter_id=None,
        description=f"Credit purchase: {grant.name}",
        quantity=Decimal(1),
        amount=grant.amount,
        period_start=now,
        period_end=now,
    )
    await insert_drafts(session, [(row, [line])], actor, now, pending_items=False)
    invoice = await invoices.get_invoice(session, tenant.id, invoice_id)
    await finalize(session, tenant, invoice, at=now, actor=actor)


async def void_grant(
    session: AsyncSession,
    tenant_id: str,
    grant_id: str,
    payments: InvoicePayments,
    *,
    now: datetime,
    actor: str,
) -> CreditGrant:
    """Void a grant; a pending one by voiding its unpaid invoice (which voids the grant)."""
    grant = await grants.get_grant(session, tenant_id, grant_id)
    if grant.status == "pending" and grant.invoice_id is not None:
        invoice = await invoices.get_invoice(session, tenant_id, grant.invoice_id, lock=True)
        if invoice.status in ("draft", "open"):
            await invoices.void(session, invoice, at=now, actor=actor, payments=payments)
            await session.refresh(grant)
            return grant
    return await grants.void_grant(session, grant, at=now)
