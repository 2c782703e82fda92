"""What invoices take from grants: ``applied`` entries at finalization, ``restored`` on void."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.credits import ledger
from billing.credits.ledger import Movement
from billing.credits.models import CreditLedgerEntry

# A grant that ended while an invoice held part of it gets that part back and loses it again.
_ENDED = {"expired": "expired", "voided": "voided"}


async def apply(
    session: AsyncSession, invoice_id: str, applications: Sequence[tuple[str, int]], *, at: datetime
) -> list[CreditLedgerEntry]:
    """One ``applied`` entry per (grant id, amount), in the order given."""
    amounts = {grant_id: amount for grant_id, amount in applications if amount > 0}
    grants = {grant.id: grant for grant in await ledger.lock_grants(session, amounts)}
    for grant_id, amount in amounts.items():
        grant = grants[grant_id]
        if grant.status != "active" or grant.available < amount:
            raise ValueError(f"Credit grant {grant_id} cannot give {amount} (has {grant.available})")
    movements = [
        Movement(grants[g], "applied", -amount, invoice_id=invoice_id) for g, amount in amounts.items()
    ]
    return await ledger.write(session, movements, at=at)


async def restore(session: AsyncSession, invoice_id: str, *, at: datetime) -> list[CreditLedgerEntry]:
    """Give each grant back what the invoice still holds of it; a second call gives nothing."""
    held = await _held(session, invoice_id)
    grants = await ledger.lock_grants(session, held)
    movements = []
    for grant in grants:
        ended = _ENDED.get(grant.status)
        movements.append(Movement(grant, "restored", held[grant.id], invoice_id=invoice_id))
        if ended is not None:
            movements.append(Movement(grant, ended, -held[grant.id], invoice_id=invoice_id))
    return await ledger.write(session, movements, at=at)


async def _held(session: AsyncSession, invoice_id: str) -> dict[str, int]:
    query = sa.select(CreditLedgerEntry.credit_grant_id, CreditLedgerEntry.amount).where(
        CreditLedgerEntry.invoice_id == invoice_id, CreditLedgerEntry.type.in_(("applied", "restored"))
    )
    held: dict[str, int] = defaultdict(int)
    for grant_id, amount in (await session.execute(query)).all():
        held[grant_id] -= amount
    return {grant_id: amount for grant_id, amount in held.items() if amount > 0}
