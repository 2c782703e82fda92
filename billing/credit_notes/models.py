"""Credit notes, their lines, and the per-tenant sequence of their numbers.

A credit note is final from its creation: no draft, no void. Its amounts are kept as computed at
issue, beside the invoice facts they were computed from (line ids, tax rates), so that it reads
the same whatever happens to the invoice later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, JSONType, UTCDateTime, one_of

REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory", "other")
REFUNDS = ("none", "provider", "credit_balance")
STATUSES = ("issued",)


class CreditNote(Base):
    __tablename__ = "credit_notes"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(sa.String(40))
    currency: Mapped[str] = mapped_column(sa.String(3))
    reason: Mapped[str] = mapped_column(sa.String(32))
    refund: Mapped[str] = mapped_column(sa.String(16))
    memo: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    subtotal: Mapped[int] = mapped_column(sa.BigInteger)
    tax_total: Mapped[int] = mapped_column(sa.BigInteger)
    total: Mapped[int] = mapped_column(sa.BigInteger)
    # What the note took off the amount due (open invoice), and what it gives back beyond it.
    pre_payment_amount: Mapped[int] = mapped_column(sa.BigInteger)
    post_payment_amount: Mapped[int] = mapped_column(sa.BigInteger)
    refund_id: Mapped[str | None] = mapped_column(sa.String(40))
    credit_grant_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "number"),
        sa.Index("ix_credit_notes_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_credit_notes_invoice_id", "invoice_id"),
        sa.Index("ix_credit_notes_tenant_id_customer_id", "tenant_id", "customer_id"),
        sa.CheckConstraint(one_of("reason", REASONS), name="reason"),
        sa.CheckConstraint(one_of("refund", REFUNDS), name="refund"),
        sa.CheckConstraint(one_of("status", STATUSES), name="status"),
        sa.CheckConstraint("total > 0", name="total"),
        sa.CheckConstraint("pre_payment_amount + post_payment_amount = total", name="split"),
    )


class CreditNoteLine(Base):
    __tablename__ = "credit_note_lines"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    credit_note_id: Mapped[str] = mapped_column(
        sa.ForeignKey("credit_notes.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(sa.Integer)
    # The invoice line's public id (il_...); None for a whole-invoice amount.
    invoice_line: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    description: Mapped[str] = mapped_column(sa.String(500))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    # [{"tax_rate", "amount", "inclusive"}]
    tax_amounts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)

    __table_args__ = (sa.UniqueConstraint("credit_note_id", "position"),)


class CreditNoteSequence(Base):
    """The last credit note number given out per tenant (as ``InvoiceSequence``): the row stays
    locked until the issuing transaction commits, so numbers are gapless."""

    __tablename__ = "credit_note_sequences"

    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    last_number: Mapped[int] = mapped_column(sa.BigInteger, default=0)
