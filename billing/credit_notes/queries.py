"""Credit notes as the tenant reads them: the filtered list, one note, their wire shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import NotFound
from billing.core.pagination import PageRequest, fetch_page
from billing.credit_notes.models import CreditNote, CreditNoteLine
from billing.credit_notes.schemas import CreditNoteOut, credit_note_out
from billing.customers.service import get_customer


async def list_notes(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    invoice_id: str | None = None,
    customer: str | None = None,
) -> tuple[list[CreditNote], bool]:
    """The tenant's credit notes, newest first; ``customer`` is an id or an external_id."""
    query = sa.select(CreditNote).where(CreditNote.tenant_id == tenant_id)
    if customer is not None:
        query = query.where(CreditNote.customer_id == (await get_customer(session, tenant_id, customer)).id)
    if invoice_id is not None:
        query = query.where(CreditNote.invoice_id == invoice_id)
    return await fetch_page(session, query, CreditNote.id, page)


async def get_note(session: AsyncSession, tenant_id: str, note_id: str) -> CreditNote:
    note = await session.get(CreditNote, note_id)
    if note is None or note.tenant_id != tenant_id:
        raise NotFound(f"No credit note {note_id}")
    return note


async def notes_out(session: AsyncSession, notes: Sequence[CreditNote]) -> list[CreditNoteOut]:
    """The wire shape of many notes, with one query for all their lines."""
    lines: dict[str, list[CreditNoteLine]] = defaultdict(list)
    if notes:
        query = (
            sa.select(CreditNoteLine)
            .where(CreditNoteLine.credit_note_id.in_([note.id for note in notes]))
            .order_by(CreditNoteLine.credit_note_id, CreditNoteLine.position)
        )
        for line in await session.scalars(query):
            lines[line.credit_note_id].append(line)
    return [credit_note_out(note, lines[note.id]) for note in notes]
