"""Payment attempts and refunds.

A row is committed before the provider is called and carries the idempotency key the call uses,
so that a crash or a timeout is resolved by repeating the same call, never by a new one.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.claims import ClaimMixin
from billing.core.db.types import Base, UTCDateTime

PAYMENT_STATUSES = ("pending", "succeeded", "failed", "requires_action")
REFUND_STATUSES = ("pending", "succeeded", "failed")
DECLINE_TYPES = ("hard", "soft")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Payment(Base, ClaimMixin):
    """One attempt to charge an invoice. While ``pending`` it is claimed by whoever is calling the
    provider; a claim that expires (a crash, a hang) hands it to reconciliation."""

    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    # Why this attempt was made: ``finalized`` (the first charge), ``manual`` (POST /pay), ``retry``.
    reason: Mapped[str] = mapped_column(sa.String(16))
    provider: Mapped[str] = mapped_column(sa.String(20))
    idempotency_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    provider_customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    payment_method: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(20))
    provider_payment_id: Mapped[str | None] = mapped_column(sa.String(255))
    failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    decline_code: Mapped[str | None] = mapped_column(sa.String(64))
    decline_type: Mapped[str | None] = mapped_column(sa.String(8))
    failure_message: Mapped[str | None] = mapped_column(sa.String(500))
    # Reconciliation: how often the outcome was asked for, and when a stuck one was flagged.
    checks: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("invoice_id", "attempt"),
        sa.Index("ix_payments_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_payments_invoice_id", "invoice_id"),
        sa.Index("ix_payments_pending", "status", "claim_expires_at"),
        sa.Index("ix_payments_provider_payment_id", "provider_payment_id"),
        sa.CheckConstraint(_one_of("status", PAYMENT_STATUSES), name="status"),
        sa.CheckConstraint(
            f"decline_type IS NULL OR {_one_of('decline_type', DECLINE_TYPES)}", name="decline"
        ),
        sa.CheckConstraint("amount > 0", name="amount"),
    )


class Refund(Base, ClaimMixin):
    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"), index=True)
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("payments.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(sa.String(20))
    idempotency_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(20))
    provider_refund_id: Mapped[str | None] = mapped_column(sa.String(255))
    failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    failure_message: Mapped[str | None] = mapped_column(sa.String(500))
    checks: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("ix_refunds_pending", "status", "claim_expires_at"),
        sa.CheckConstraint(_one_of("status", REFUND_STATUSES), name="status"),
        sa.CheckConstraint("amount > 0", name="amount"),
    )
