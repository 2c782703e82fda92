"""``GET /v1/invoices/export.csv``: one row per invoice line, with the list's filters.

Streamed a page of invoices at a time, so an export of any size runs in constant memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

from billing.core import money
from billing.core.clock import format_timestamp
from billing.core.db.engine import Database
from billing.core.pagination import PageRequest
from billing.invoicing import invoices
from billing.invoicing.ports import InvoicePayments
from billing.invoicing.schemas import InvoiceOut, LineOut

PAGE = 100
COLUMNS = (
    "invoice_id",
    "number",
    "status",
    "customer",
    "customer_external_id",
    "subscription",
    "billing_reason",
    "currency",
    "invoice_period_start",
    "invoice_period_end",
    "invoice_subtotal",
    "discount_total",
    "tax_total",
    "invoice_total",
    "credits_applied",
    "credit_notes_amount",
    "amount_due",
    "finalized_at",
    "due_at",
    "overdue",
    "line",
    "kind",
    "meter",
    "description",
    "quantity",
    "amount",
    "amount_decimal",
    "line_id",
    "discount",
    "tax",
    "line_period_start",
    "line_period_end",
    "price",
    "group",
    "unpriced_quantity",
)


async def export_rows(
    database: Database, tenant_id: str, filters: invoices.InvoiceFilters, payments: InvoicePayments
) -> AsyncIterator[bytes]:
    yield _csv_line(COLUMNS)
    after: str | None = None
    while True:
        async with database.read() as session:
            rows, has_more = await invoices.list_invoices(
                session, tenant_id, filters, PageRequest(PAGE, after)
            )
            page = await invoices.invoices_out(session, rows, payments, now=filters.now)
        chunk = b"".join(
            _csv_line(_row(invoice, position, line))
            for invoice in page
            for position, line in enumerate(invoice.lines)
        )
        if chunk:
            yield chunk
        if not has_more:
            return
        after = rows[-1].id


def _row(invoice: InvoiceOut, position: int, line: LineOut) -> tuple[str, ...]:
    stamp = format_timestamp
    return (
        invoice.id or "",
        invoice.number or "",
        invoice.status,
        invoice.customer,
        invoice.customer_external_id,
        invoice.subscription or "",
        invoice.billing_reason,
        invoice.currency,
        stamp(invoice.period_start),
        stamp(invoice.period_end),
        str(invoice.subtotal),
        str(invoice.discount_total),
        str(invoice.tax_total),
        str(invoice.total),
        str(invoice.credits_applied),
        str(invoice.pre_payment_credit_notes_amount + invoice.post_payment_credit_notes_amount),
        str(invoice.amount_due),
        stamp(invoice.finalized_at) if invoice.finalized_at else "",
        stamp(invoice.due_at) if invoice.due_at else "",
        "true" if invoice.overdue else "false",
        str(position),
        line.kind,
        line.meter or "",
        line.description,
        line.quantity,
        str(line.amount),
        format(money.from_minor_units(line.amount, invoice.currency), "f"),
        line.id or "",
        str(sum(share.amount for share in line.discount_amounts)),
        str(sum(tax.amount for tax in line.tax_amounts)),
        stamp(line.period_start),
        stamp(line.period_end),
        "" if line.price is None else str(line.price),
        "" if line.group is None else json.dumps(line.group, separators=(",", ":"), ensure_ascii=False),
        line.unpriced_quantity or "",
    )


def _csv_line(values: tuple[str, ...]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([_defuse(value) for value in values])
    return buffer.getvalue().encode()


def _defuse(value: str) -> str:
    """Keep spreadsheets from running a cell as a formula (CSV injection)."""
    return (
        "'" + value
        if value[:1] in ("=", "+", "@", "\t", "\r") or (value[:1] == "-" and not _number(value))
        else value
    )


def _number(value: str) -> bool:
    try:
        money.parse_decimal(value)
    except money.InvalidDecimal:
        return False
    return True
