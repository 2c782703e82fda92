"""Webhook endpoints, one delivery per (endpoint, event), and every attempt of each delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.claims import ClaimMixin
from billing.core.db.types import Base, JSONType, UTCDateTime

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    events: Mapped[list[Any]] = mapped_column(JSONType)
    enabled: Mapped[bool] = mapped_column(sa.Boolean)
    # Encrypted with the secret box; the previous secret still signs until it expires (rotation).
    secret: Mapped[str] = mapped_column(sa.Text)
    previous_secret: Mapped[str | None] = mapped_column(sa.Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The first failed attempt since the last success: three days of failures disable the endpoint.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.Index("ix_webhook_endpoints_tenant_id_id", "tenant_id", "id"),)


class WebhookDelivery(Base, ClaimMixin):
    """One event for one endpoint. ``body`` is the exact JSON sent by every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(sa.String(40))
    event_type: Mapped[str] = mapped_column(sa.String(64))
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # No automatic retry is scheduled past this instant (three days after the event).
    retry_until: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "event_id"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in DELIVERY_STATUSES)})", name="status"),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded: Mapped[bool] = mapped_column(sa.Boolean)
    status_code: Mapped[int | None] = mapped_column(sa.Integer)
    duration_ms: Mapped[int] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.String(500))
