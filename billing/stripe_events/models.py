"""The inbox of Stripe events: one row per (tenant, Stripe event id), stored before we answer 200."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.claims import ClaimMixin
from billing.core.db.types import Base, UTCDateTime

RECEIVED, PROCESSED, FAILED, SKIPPED = "received", "processed", "failed", "skipped"
STATUSES = (RECEIVED, PROCESSED, FAILED, SKIPPED)


class StripeEvent(Base, ClaimMixin):
    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    stripe_event_id: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(100))
    livemode: Mapped[bool] = mapped_column(sa.Boolean)
    api_version: Mapped[str | None] = mapped_column(sa.String(64))
    # Stripe's ``created``: when the event happened, not when it reached us.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The request body exactly as signed, so that processing and replays read what Stripe sent.
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "stripe_event_id"),
        sa.Index("ix_stripe_events_due", "status", "next_attempt_at"),
        sa.Index("ix_stripe_events_tenant_id_id", "tenant_id", "id"),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
        sa.CheckConstraint("attempts >= 0", name="attempts"),
    )
