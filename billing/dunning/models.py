"""Dunning policies (one per tenant) and cases (one per unpaid invoice)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.claims import ClaimMixin
from billing.core.db.types import Base, JSONType, UTCDateTime

CASE_STATUSES = ("active", "recovered", "exhausted", "canceled")
FINAL_ACTIONS = ("mark_uncollectible", "leave_open")


class DunningPolicy(Base):
    __tablename__ = "dunning_policies"

    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    retry_schedule_days: Mapped[list[int]] = mapped_column(JSONType)
    final_action: Mapped[str] = mapped_column(sa.String(32))
    suspend_customer: Mapped[bool] = mapped_column(sa.Boolean)
    expiring_card_notice: Mapped[bool] = mapped_column(sa.Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DunningCase(Base, ClaimMixin):
    __tablename__ = "dunning_cases"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"), unique=True)
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16))
    # The policy's schedule when the case opened: a later policy change does not move its retries.
    retry_schedule_days: Mapped[list[int]] = mapped_column(JSONType)
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_slot: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_action: Mapped[str | None] = mapped_column(sa.String(16))
    next_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    final_notice_sent: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # The failures seen so far; ``last_attempt`` makes a repeated outbox delivery a no-op.
    failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_failure_class: Mapped[str | None] = mapped_column(sa.String(16))
    last_failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    # Retries this case made (each one a payment attempt with reason "dunning <n>").
    retries: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("ix_dunning_cases_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_dunning_cases_due", "status", "next_action_at"),
        sa.Index("ix_dunning_cases_customer_id", "customer_id"),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in CASE_STATUSES)})", name="status"),
    )
