"""Credit note numbers: ``CN-<tenant invoice prefix>-NNNNNN``, gapless per tenant."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.inserts import insert_ignore
from billing.credit_notes.models import CreditNoteSequence


async def next_number(session: AsyncSession, tenant_id: str, invoice_prefix: str) -> str:
    """The tenant's next credit note number. The counter row stays locked until the caller
    commits, and a rollback gives the number back: no gaps."""
    await insert_ignore(session, CreditNoteSequence.__table__, [{"tenant_id": tenant_id, "last_number": 0}])
    number = await session.scalar(
        sa.update(CreditNoteSequence)
        .where(CreditNoteSequence.tenant_id == tenant_id)
        .values(last_number=CreditNoteSequence.last_number + 1)
        .returning(CreditNoteSequence.last_number)
    )
    return f"CN-{invoice_prefix}-{number:06d}"
