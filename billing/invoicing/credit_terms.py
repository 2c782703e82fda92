"""Credit grants as invoices use them: what is available at an instant, in burn order, and
the ledger entries that finalizing and voiding an invoice write (the credits domain keeps the
grants and their ledger; this is invoicing's door to it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billing.credits import grants, spending
from billing.customers.models import Customer
from billing.invoicing.amounts import Grant
from billing.invoicing.models import Invoice


async def grants_for(
    session: AsyncSession, tenant_id: str, customer_ids: Collection[str], *, at: datetime, lock: bool = False
) -> dict[tuple[str, str], tuple[Grant, ...]]:
    """Per (customer id, currency), the grants an invoice finalized at ``at`` may use, in burn
    order with what each has available; none: not in the answer. ``lock``: the grant rows are
    locked until commit (finalization), so that two invoices never spend the same credit."""
    found: dict[tuple[str, str], list[Grant]] = {}
    for row in await grants.usable(session, tenant_id, customer_ids, at=at, lock=lock):
        meters = None if row.applies_to_meters is None else frozenset(row.applies_to_meters)
        found.setdefault((row.customer_id, row.currency), []).append(Grant(row.id, row.available, meters))
    return {key: tuple(value) for key, value in found.items()}


async def apply(
    session: AsyncSession, invoice: Invoice, applications: Sequence[tuple[str, int]], *, at: datetime
) -> None:
    """Write the ``applied`` ledger entries of a finalized invoice (the caller locked the grant
    rows with ``grants_for(..., lock=True)``)."""
    if invoice.billing_reason == "credit_grant":
        return
    await spending.apply(session, invoice.id, applications, at=at)


async def restore(session: AsyncSession, invoice: Invoice, *, at: datetime) -> None:
    """A voided invoice gives each grant back its share (``restored`` entries)."""
    await spending.restore(session, invoice.id, at=at)


async def grant_negative_total(session: AsyncSession, invoice: Invoice, *, at: datetime) -> None:
    """A finalized invoice whose total is below zero: ``-total`` becomes a promotional grant."""
    if invoice.total >= 0:
        return
    customer = await session.get_one(Customer, invoice.customer_id)
    await grants.grant_negative_total(
        session, invoice.id, customer, -invoice.total, invoice.currency, invoice.number, at=at
    )
