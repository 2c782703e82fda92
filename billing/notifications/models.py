"""The notification outbox: one row per email, rendered when queued, sent by the dispatcher."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.claims import ClaimMixin
from billing.core.db.types import Base, UTCDateTime

QUEUED, SENT, FAILED, SKIPPED = "queued", "sent", "failed", "skipped"
STATUSES = (QUEUED, SENT, FAILED, SKIPPED)


class Notification(Base, ClaimMixin):
    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    # None for emails to the tenant itself (its support address).
    customer_id: Mapped[str | None] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    invoice_id: Mapped[str | None] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(40))
    dedupe_key: Mapped[str] = mapped_column(sa.String(255))
    # None when there is nobody to send to (status skipped).
    to_address: Mapped[str | None] = mapped_column(sa.String(320))
    from_address: Mapped[str] = mapped_column(sa.String(640))
    reply_to: Mapped[str | None] = mapped_column(sa.String(320))
    subject: Mapped[str] = mapped_column(sa.String(998))
    html: Mapped[str] = mapped_column(sa.Text)
    text: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # The guarantee that nobody gets the same notification twice starts here.
        sa.UniqueConstraint("tenant_id", "dedupe_key"),
        sa.Index("ix_notifications_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_notifications_tenant_id_customer_id", "tenant_id", "customer_id"),
        sa.Index("ix_notifications_invoice_id", "invoice_id"),
        sa.Index("ix_notifications_due", "status", "next_attempt_at"),
        sa.CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in STATUSES)})",
            name="status",
        ),
        sa.CheckConstraint("attempts >= 0", name="attempts"),
    )
