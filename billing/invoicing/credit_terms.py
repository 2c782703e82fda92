"""Credit grants as invoices use them: what is available at an instant, in burn order, and
the ledger entries that finalizing and voiding an invoice write.

(Filled in with credit grants and the ledger.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.amounts import Grant
from billing.invoicing.models import Invoice


async def grants_for(
    session: AsyncSession, tenant_id: str, customer_ids: Collection[str], *, at: datetime, lock: bool = False
) -> dict[tuple[str, str], tuple[Grant, ...]]:
    """Per (customer id, currency), the grants an invoice finalized at ``at`` may use, in burn
    order with what each has available; none: not in the answer. ``lock``: the grant rows are
    locked until commit (finalization), so that two invoices never spend the same credit."""
    return {}


async def apply(
    session: AsyncSession, invoice: Invoice, applications: Sequence[tuple[str, int]], *, at: datetime
) -> None:
    """Write the ``applied`` ledger entries of a finalized invoice (the caller locked the grant
    rows with ``grants_for(..., lock=True)``)."""


async def restore(session: AsyncSession, invoice: Invoice, *, at: datetime) -> None:
    """A voided invoice gives each grant back its share (``restored`` entries)."""


async def grant_negative_total(session: AsyncSession, invoice: Invoice, *, at: datetime) -> None:
    """A finalized invoice whose total is below zero: ``-total`` becomes a promotional grant."""
