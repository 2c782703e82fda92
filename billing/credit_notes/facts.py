"""What a credit note is computed from: the credited invoice lines, their nets and taxes, and
what earlier credit notes of the invoice took of each."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import FieldError, NotFound, ValidationFailed
from billing.credit_notes.amounts import InvoiceLineFacts, Tax
from billing.credit_notes.models import CreditNote, CreditNoteLine
from billing.credit_notes.schemas import LineIn
from billing.invoicing.models import Invoice, InvoiceLine


def taxes(stored: Sequence[dict[str, Any]]) -> tuple[Tax, ...]:
    return tuple(Tax(str(t["tax_rate"]), int(t["amount"]), bool(t["inclusive"])) for t in stored)


def net(line: InvoiceLine) -> int:
    return line.amount - sum(int(share["amount"]) for share in line.discount_amounts or [])


async def credited_by_line(session: AsyncSession, invoice_id: str) -> Counter[str]:
    query = (
        sa.select(CreditNoteLine.invoice_line, sa.func.sum(CreditNoteLine.amount))
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .where(CreditNote.invoice_id == invoice_id, CreditNoteLine.invoice_line.is_not(None))
        .group_by(CreditNoteLine.invoice_line)
    )
    return Counter({str(line): int(amount) for line, amount in (await session.execute(query)).all()})


async def line_credits(
    session: AsyncSession, invoice: Invoice, requested: Sequence[LineIn]
) -> list[tuple[InvoiceLineFacts, int]]:
    """Each requested line with its facts. An id of no line of the tenant answers 404 (as another
    tenant's does); a line of another of its invoices, or named twice, 422."""
    ids = [wanted.invoice_line for wanted in requested]
    _once_each(ids)
    query = (
        sa.select(InvoiceLine, Invoice.tenant_id)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(InvoiceLine.public_id.in_(ids))
    )
    found = {
        line.public_id: line
        for line, tenant_id in (await session.execute(query)).all()
        if tenant_id == invoice.tenant_id
    }
    credited = await credited_by_line(session, invoice.id)
    credits = []
    for index, wanted in enumerate(requested):
        line = found.get(wanted.invoice_line)
        if line is None:
            raise NotFound(f"No invoice line {wanted.invoice_line}")
        if line.invoice_id != invoice.id:
            field, message = f"lines[{index}].invoice_line", f"not a line of invoice {invoice.id}"
            raise ValidationFailed(
                f"{field}: {message}", code="invoice_line_not_on_invoice", errors=[FieldError(field, message)]
            )
        facts = InvoiceLineFacts(
            public_id=wanted.invoice_line,
            description=line.description,
            net=net(line),
            taxes=taxes(line.tax_amounts or []),
            credited=credited[wanted.invoice_line],
        )
        credits.append((facts, wanted.amount))
    return credits


def _once_each(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, line_id in enumerate(ids):
        if line_id in seen:
            raise ValidationFailed(
                f"lines[{index}].invoice_line: {line_id} is named twice",
                errors=[FieldError(f"lines[{index}].invoice_line", "named twice: give one amount per line")],
            )
        seen.add(line_id)
