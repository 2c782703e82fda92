"""Invoice items as invoice lines: pending items taken by the drafts being inserted, and the
lines of the items an invoice holds.

A pending item goes onto its customer's next invoice. When a batch of drafts is inserted, one
query finds the pending items of all their customers, and each customer's items go onto its
earliest draft of the batch, after the usage lines, in creation order. The claim is a
conditional UPDATE (still ``pending``) in the transaction that inserts the drafts, so that
concurrent billing runs, a DELETE, or an item joining a draft directly never put an item on two
invoices: an item taken elsewhere meanwhile is taken off its draft again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.queries import any_of
from billing.invoicing.invoices import AMOUNT_COLUMNS, set_amounts_of_rows
from billing.invoicing.lines import LineDraft
from billing.invoicing.models import Invoice, InvoiceItem

Drafts = Sequence[tuple[dict[str, Any], list[LineDraft]]]
_CLAIM_CHUNK = 1000
_items = InvoiceItem.__table__


def item_line(item: Any) -> LineDraft:
    """The line of an item (an ``InvoiceItem`` or a row of its table)."""
    return LineDraft(
        kind="invoice_item",
        meter_id=None,
        description=item.description,
        quantity=Decimal(1),
        amount=item.amount,
        period_start=item.period_start,
        period_end=item.period_end,
        invoice_item_id=item.id,
    )


async def attached_lines(session: AsyncSession, invoice_id: str) -> list[LineDraft]:
    """The lines of the items an invoice holds, in creation order."""
    rows = await session.execute(
        sa.select(_items)
        .where(_items.c.invoice_id == invoice_id, _items.c.status == "invoiced")
        .order_by(_items.c.created_at, _items.c.id)
    )
    return [item_line(row) for row in rows]


async def pending_lines(session: AsyncSession, customer_id: str, currency: str) -> list[LineDraft]:
    """The lines the customer's pending items would add to its next invoice (the upcoming one)."""
    rows = await session.execute(
        sa.select(_items)
        .where(
            _items.c.customer_id == customer_id,
            _items.c.status == "pending",
            _items.c.currency == currency,
        )
        .order_by(_items.c.created_at, _items.c.id)
    )
    return [item_line(row) for row in rows]


async def attach_pending(session: AsyncSession, drafts: Drafts) -> dict[str, str]:
    """Add the pending items of the drafts' customers to each one's earliest draft (an item in
    another currency waits for an invoice in its own); return item id -> invoice id."""
    earliest: dict[str, tuple[dict[str, Any], list[LineDraft]]] = {}
    for row, drafted in sorted(drafts, key=lambda draft: draft[0]["period_start"]):
        earliest.setdefault(row["customer_id"], (row, drafted))
    if not earliest:
        return {}
    dialect = session.get_bind().dialect.name
    rows = await session.execute(
        sa.select(_items)
        .where(
            _items.c.tenant_id.in_({row["tenant_id"] for row, _ in earliest.values()}),
            any_of(_items.c.customer_id, list(earliest), dialect),
            _items.c.status == "pending",
        )
        .order_by(_items.c.created_at, _items.c.id)
    )
    assigned: dict[str, str] = {}
    for item in rows:
        row, drafted = earliest[item.customer_id]
        if item.currency == row["currency"]:
            drafted.append(item_line(item))
            assigned[item.id] = row["id"]
    return assigned


async def claim(
    session: AsyncSession, assigned: dict[str, str], inserted: set[str], drafts: Drafts, at: datetime
) -> None:
    """Mark the items of the inserted drafts invoiced there; an item that is no longer pending
    leaves its draft, whose totals are then written again."""
    wanted = [(item, invoice) for item, invoice in assigned.items() if invoice in inserted]
    claimed: set[str] = set()
    for start in range(0, len(wanted), _CLAIM_CHUNK):
        chunk = wanted[start : start + _CLAIM_CHUNK]
        result = await session.execute(
            sa.update(_items)
            .where(_items.c.id.in_([item for item, _ in chunk]), _items.c.status == "pending")
            .values(status="invoiced", invoice_id=sa.case(dict(chunk), value=_items.c.id), updated_at=at)
            .returning(_items.c.id)
        )
        claimed.update(result.scalars())
    lost = {item for item, _ in wanted} - claimed
    if lost:
        await _drop_lost(session, lost, inserted, drafts, at)


async def _drop_lost(
    session: AsyncSession, lost: set[str], inserted: set[str], drafts: Drafts, at: datetime
) -> None:
    for row, drafted in drafts:
        if row["id"] not in inserted or not any(line.invoice_item_id in lost for line in drafted):
            continue
        drafted[:] = [line for line in drafted if line.invoice_item_id not in lost]
        await set_amounts_of_rows(session, [(row, drafted)], at)
        await session.execute(
            sa.update(Invoice)
            .where(Invoice.id == row["id"])
            .values({key: row[key] for key in AMOUNT_COLUMNS})
        )
