"""``invoice.overdue``: once per invoice, when an open invoice with something due passes its due
date (the end of its net terms).

Invoices are claimed a batch at a time (FOR UPDATE SKIP LOCKED; SQLite has one writer), marked
``overdue_notified_at`` and announced in the same transaction, so replicas never announce one twice.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from billing.core import outbox
from billing.core.context import AppContext
from billing.invoicing import invoices
from billing.invoicing.models import Invoice
from billing.invoicing.ports import InvoicePayments

BATCH = 500


async def announce_overdue(
    ctx: AppContext, payments: InvoicePayments, *, at: datetime, tenant_id: str | None = None
) -> int:
    """Emit invoice.overdue for every invoice overdue at ``at`` and not yet announced; how many."""
    done = 0
    while True:
        async with ctx.database.transaction() as session:
            query = (
                sa.select(Invoice)
                .where(invoices.overdue_at(at), Invoice.overdue_notified_at.is_(None))
                .order_by(Invoice.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            if tenant_id is not None:
                query = query.where(Invoice.tenant_id == tenant_id)
            due = list(await session.scalars(query))
            if not due:
                return done
            for invoice in due:
                invoice.overdue_notified_at = at
            snapshots = await invoices.invoices_out(session, due, payments, now=at)
            await outbox.emit_many(
                session,
                [
                    (invoice.tenant_id, "invoice.overdue", invoices.event_payload(invoice, snapshot))
                    for invoice, snapshot in zip(due, snapshots, strict=True)
                ],
                now=at,
            )
            done += len(due)
