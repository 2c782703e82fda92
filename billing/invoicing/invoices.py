"""Invoice records: lines, totals, numbers, status changes, and reading them back.

Every status change is a row with its time and actor (an API key id, or ``scheduler``) and an
outbox event (``invoice.created``, ``invoice.finalized``, ``invoice.paid``, ``invoice.voided``,
``invoice.uncollectible``) for payments, dunning and outgoing webhooks to consume. The event
carries the invoice as it is at that moment (``snapshot``): a consumer that runs later, after the
invoice moved on, still tells what happened then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money, outbox
from billing.core.db.inserts import insert_ignore
from billing.core.errors import Conflict, NotFound
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.credits import grants
from billing.customers.models import Customer
from billing.invoicing import amounts, credit_terms
from billing.invoicing.lines import LineDraft
from billing.invoicing.models import Invoice, InvoiceLine, InvoiceSequence, InvoiceStatusChange
from billing.invoicing.ports import InvoicePayments
from billing.invoicing.schemas import (
    InvoiceOut,
    LineOut,
    StatusChangeOut,
    invoice_out,
    line_out,
    status_change_out,
)
from billing.invoicing.terms import InvoiceTerms, Subject, terms_for, terms_of
from billing.metering.models import Meter

SCHEDULER = "scheduler"
FINALIZED = ("open", "paid", "void", "uncollectible")


@dataclass(frozen=True)
class InvoiceFilters:
    status: str | None = None
    customer_id: str | None = None
    period_start_gte: datetime | None = None
    period_start_lt: datetime | None = None
    # In major units of each invoice's own currency (10 means $10.00 and ¥10).
    total_min: Decimal | None = None
    total_max: Decimal | None = None
    # Overdue (or, False, not overdue) at ``now``.
    overdue: bool | None = None
    now: datetime | None = None


def line_rows(invoice_id: str, lines: Sequence[LineDraft]) -> list[dict[str, object]]:
    return [
        {
            "invoice_id": invoice_id,
            "public_id": new_id("il"),
            "position": position,
            "kind": line.kind,
            "meter_id": line.meter_id,
            "description": line.description[:500],
            "quantity": line.quantity,
            "amount": line.amount,
            "period_start": line.period_start,
            "period_end": line.period_end,
            "tiers": line.tiers,
            "invoice_item_id": line.invoice_item_id,
            "plan_id": line.plan_id,
            "discount_amounts": line.discount_amounts,
            "tax_amounts": line.tax_amounts,
            "discount_id": line.discount_id,
            "price_index": line.price_index,
            "group_values": line.group,
            "unpriced_quantity": line.unpriced_quantity,
        }
        for position, line in enumerate(lines)
    ]


# The columns ``set_amounts`` writes.
AMOUNT_COLUMNS = (
    "subtotal",
    "discount_total",
    "tax_total",
    "total_tax_amounts",
    "total_excluding_tax",
    "total",
    "credits_applied",
    "credit_applications",
    "amount_due",
    "discount_id",
    "tax_exempt",
    "customer_address",
    "customer_tax_ids",
    "legal_notes",
)


def set_amounts(
    invoice: Invoice | dict[str, Any], lines: Sequence[LineDraft], invoice_terms: InvoiceTerms
) -> list[LineDraft]:
    """Compute the invoice's amounts from its rated lines under ``invoice_terms`` (the one
    computation: ``amounts.compute``), set them on the invoice or row, and return the lines to
    store: the given ones with their discount and tax amounts, then the discount line."""
    row = invoice if isinstance(invoice, dict) else None
    get = row.get if row is not None else lambda key: getattr(invoice, key)
    result = amounts.compute(
        lines,
        invoice_terms.terms,
        str(get("currency")),
        amount_paid=int(get("amount_paid") or 0),
        pre_payment_credit_notes=int(get("pre_payment_credit_notes_amount") or 0),
    )
    discount = next((line.discount_id for line in result.lines if line.kind == "discount"), None)
    values: dict[str, Any] = {
        "subtotal": result.subtotal,
        "discount_total": result.discount_total,
        "tax_total": result.tax_total,
        "total_tax_amounts": result.total_tax_amounts,
        "total_excluding_tax": result.total_excluding_tax,
        "total": result.total,
        "credits_applied": result.credits_applied,
        "credit_applications": [list(application) for application in result.credit_applications],
        "amount_due": result.amount_due,
        "discount_id": discount,
        "tax_exempt": invoice_terms.taxes.exempt,
        "customer_address": invoice_terms.taxes.address,
        "customer_tax_ids": list(invoice_terms.taxes.tax_ids),
        "legal_notes": invoice_terms.legal_notes,
    }
    if row is not None:
        row.update(values)
    else:
        for key, value in values.items():
            setattr(invoice, key, value)
    return result.lines


async def set_amounts_of_rows(
    session: AsyncSession, drafts: Sequence[tuple[dict[str, Any], list[LineDraft]]], at: datetime
) -> None:
    """``set_amounts`` for invoice rows about to be written, their terms loaded in bulk; each
    row's list of lines becomes the lines to store."""
    by_tenant: dict[str, list[tuple[dict[str, Any], list[LineDraft]]]] = defaultdict(list)
    for row, drafted in drafts:
        by_tenant[row["tenant_id"]].append((row, drafted))
    for tenant_id, group in by_tenant.items():
        found = await terms_for(session, tenant_id, [Subject.of(row) for row, _ in group], at=at)
        for row, drafted in group:
            drafted[:] = set_amounts(row, drafted, found[Subject.of(row)])


def settle_amount_due(invoice: Invoice) -> None:
    """``amount_due`` after a payment, a refund or a credit note: what the total leaves once
    credits, pre-payment credit notes and payments are counted, never below zero."""
    invoice.amount_due = max(
        invoice.total
        - invoice.credits_applied
        - invoice.pre_payment_credit_notes_amount
        - invoice.amount_paid,
        0,
    )


async def replace_lines(
    session: AsyncSession,
    invoice: Invoice,
    lines: Sequence[LineDraft],
    at: datetime,
    *,
    finalizing: bool = False,
    known: Mapping[Subject, InvoiceTerms] | None = None,
) -> None:
    """Store the invoice's lines and amounts as computed now. ``finalizing``: with the terms of
    this instant, the credit grants it uses locked until commit. ``known``: terms loaded in bulk
    for a batch of drafts at ``at``."""
    invoice_terms = (known or {}).get(Subject.of(invoice)) if not finalizing else None
    if invoice_terms is None:
        invoice_terms = await terms_of(session, invoice, at=at, lock=finalizing)
    stored = set_amounts(invoice, lines, invoice_terms)
    await session.execute(sa.delete(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    if stored:
        await session.execute(sa.insert(InvoiceLine), line_rows(invoice.id, stored))
    invoice.computed_at = invoice.updated_at = at


async def next_number(session: AsyncSession, tenant_id: str, prefix: str) -> str:
    """The tenant's next invoice number. The counter row stays locked until the caller commits,
    so concurrent finalizations queue, and a rollback gives the number back: no gaps."""
    await insert_ignore(session, InvoiceSequence.__table__, [{"tenant_id": tenant_id, "last_number": 0}])
    number = await session.scalar(
        sa.update(InvoiceSequence)
        .where(InvoiceSequence.tenant_id == tenant_id)
        .values(last_number=InvoiceSequence.last_number + 1)
        .returning(InvoiceSequence.last_number)
    )
    return f"{prefix}-{number:06d}"


async def record_status(
    session: AsyncSession,
    invoice: Invoice,
    status: str,
    *,
    at: datetime,
    actor: str,
    payments: InvoicePayments,
    topic: str | None = None,
    details: Mapping[str, object] | None = None,
) -> None:
    """Move the invoice to ``status`` and keep who did it; queue ``topic`` (default invoice.<status>)
    with the invoice as it is now, and ``details`` for consumers (what caused the change)."""
    invoice.status = status
    invoice.updated_at = at
    session.add(InvoiceStatusChange(invoice_id=invoice.id, status=status, at=at, actor=actor))
    (snapshot,) = await invoices_out(session, [invoice], payments, now=at)
    await outbox.emit(
        session,
        tenant_id=invoice.tenant_id,
        topic=topic or f"invoice.{_TOPICS.get(status, status)}",
        payload=event_payload(invoice, snapshot) | dict(details or {}),
        now=at,
    )
    if invoice.billing_reason == "credit_grant":
        await _purchased_grant_follows(session, invoice, status, at=at)


async def _purchased_grant_follows(
    session: AsyncSession, invoice: Invoice, status: str, *, at: datetime
) -> None:
    """A paid grant turns active when its invoice is paid, and is voided with it when it is voided
    or marked uncollectible."""
    if status == "paid":
        await grants.activate_for_invoice(session, invoice.id, at=at)
    elif status in ("void", "uncollectible"):
        await grants.void_for_invoice(session, invoice.id, at=at)


_TOPICS = {"open": "finalized", "void": "voided", "draft": "created"}


_PAYLOAD = ("customer_id", "subscription_id", "status", "number", "currency", "total", "amount_due")


def event_payload(invoice: Invoice, snapshot: InvoiceOut) -> dict[str, object]:
    """The outbox payload of an invoice event: the ids consumers look up, and the whole invoice
    as it was (``object``, the wire shape) for outgoing webhooks."""
    return (
        {"invoice_id": invoice.id}
        | {key: getattr(invoice, key) for key in _PAYLOAD}
        | {"object": msgspec.to_builtins(snapshot)}
    )


async def get_invoice(
    session: AsyncSession, tenant_id: str, invoice_id: str, *, lock: bool = False
) -> Invoice:
    query = sa.select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
    invoice = (await session.scalars(query.with_for_update() if lock else query)).first()
    if invoice is None:
        raise NotFound(f"No invoice {invoice_id}")
    return invoice


async def lock_invoice(session: AsyncSession, invoice_id: str) -> Invoice:
    """The invoice by id, locked until the caller commits (for work already scoped to its tenant)."""
    query = sa.select(Invoice).where(Invoice.id == invoice_id).with_for_update()
    return (await session.scalars(query)).one()


def filtered(tenant_id: str, filters: InvoiceFilters) -> sa.Select[Invoice]:
    stmt = sa.select(Invoice).where(Invoice.tenant_id == tenant_id)
    if filters.status is not None:
        stmt = stmt.where(Invoice.status == filters.status)
    if filters.customer_id is not None:
        stmt = stmt.where(Invoice.customer_id == filters.customer_id)
    if filters.period_start_gte is not None:
        stmt = stmt.where(Invoice.period_start >= filters.period_start_gte)
    if filters.period_start_lt is not None:
        stmt = stmt.where(Invoice.period_start < filters.period_start_lt)
    if filters.total_min is not None:
        stmt = stmt.where(_total_bound(filters.total_min, lower=True))
    if filters.total_max is not None:
        stmt = stmt.where(_total_bound(filters.total_max, lower=False))
    if filters.overdue is not None and filters.now is not None:
        stmt = stmt.where(overdue_at(filters.now) if filters.overdue else not_overdue_at(filters.now))
    return stmt


def overdue_at(now: datetime) -> sa.ColumnElement[bool]:
    """Open, something due, and past its due date (the SQL of ``schemas.is_overdue``)."""
    return sa.and_(Invoice.status == "open", Invoice.amount_due > 0, Invoice.due_at < now)


def not_overdue_at(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        Invoice.status != "open", Invoice.amount_due <= 0, Invoice.due_at.is_(None), Invoice.due_at >= now
    )


def _total_bound(amount: Decimal, *, lower: bool) -> sa.ColumnElement[bool]:
    """``total`` on the right side of ``amount``, converted per currency exponent."""
    return sa.or_(
        *(
            sa.and_(
                Invoice.currency.in_(codes),
                Invoice.total >= bound if lower else Invoice.total <= bound,
            )
            for places, codes in money.currencies_by_exponent().items()
            for bound in [money.minor_units_bound(amount, places, lower=lower)]
        )
    )


async def list_invoices(
    session: AsyncSession, tenant_id: str, filters: InvoiceFilters, page: PageRequest
) -> tuple[list[Invoice], bool]:
    return await fetch_page(session, filtered(tenant_id, filters), Invoice.id, page)


async def void(
    session: AsyncSession, invoice: Invoice, *, at: datetime, actor: str, payments: InvoicePayments
) -> None:
    if invoice.status not in ("draft", "open"):
        raise Conflict(f"A {invoice.status} invoice cannot be voided", code="invalid_transition")
    pending = await payments.pending_payment(session, invoice.id)
    if pending is not None:
        raise Conflict(
            f"Payment {pending} of this invoice is pending; void it once its outcome is known",
            code="payment_in_progress",
        )
    if invoice.status == "open" and invoice.credits_applied:
        await credit_terms.restore(session, invoice, at=at)
    invoice.voided_at = at
    invoice.amount_due = 0
    await record_status(session, invoice, "void", at=at, actor=actor, payments=payments)


async def mark_uncollectible(
    session: AsyncSession, invoice: Invoice, *, at: datetime, actor: str, payments: InvoicePayments
) -> None:
    if invoice.status != "open":
        code = "invoice_not_draft" if invoice.status == "draft" else "invalid_transition"
        raise Conflict(
            f"Only an open invoice can be marked uncollectible, not a {invoice.status} one", code=code
        )
    invoice.marked_uncollectible_at = at
    await record_status(session, invoice, "uncollectible", at=at, actor=actor, payments=payments)


async def invoices_out(
    session: AsyncSession,
    invoices: Sequence[Invoice],
    payments: InvoicePayments,
    *,
    now: datetime | None = None,
) -> list[InvoiceOut]:
    """The wire shape of many invoices, with a few queries whatever their number; ``overdue`` as
    of ``now`` (see ``schemas.is_overdue`` without one)."""
    if not invoices:
        return []
    ids = [invoice.id for invoice in invoices]
    lines: dict[str, list[LineOut]] = defaultdict(list)
    line_query = (
        sa.select(InvoiceLine, Meter.key)
        .outerjoin(Meter, Meter.id == InvoiceLine.meter_id)
        .where(InvoiceLine.invoice_id.in_(ids))
        .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
    )
    for line, meter_key in (await session.execute(line_query)).all():
        lines[line.invoice_id].append(line_out(line, meter_key))
    changes: dict[str, list[StatusChangeOut]] = defaultdict(list)
    change_query = (
        sa.select(InvoiceStatusChange)
        .where(InvoiceStatusChange.invoice_id.in_(ids))
        .order_by(InvoiceStatusChange.id)
    )
    for change in await session.scalars(change_query):
        changes[change.invoice_id].append(status_change_out(change))
    external_ids = dict(
        (
            await session.execute(
                sa.select(Customer.id, Customer.external_id).where(
                    Customer.id.in_({invoice.customer_id for invoice in invoices})
                )
            )
        ).all()
    )
    paid, refunded = await payments.payments_of(session, ids)
    return [
        invoice_out(
            invoice,
            lines[invoice.id],
            changes[invoice.id],
            external_ids[invoice.customer_id],
            payments=paid.get(invoice.id, []),
            refunds=refunded.get(invoice.id, []),
            now=now,
        )
        for invoice in invoices
    ]
