"""Tenants and their API keys."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, ExactDecimal, JSONType, UTCDateTime


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    currency: Mapped[str] = mapped_column(sa.String(3))
    invoice_prefix: Mapped[str] = mapped_column(sa.String(12))
    support_email: Mapped[str | None] = mapped_column(sa.String(320))
    billing_timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    grace_period_hours: Mapped[int] = mapped_column(sa.Integer, default=24)
    payment_provider: Mapped[str] = mapped_column(sa.String(20), default="sandbox")
    stripe_secret_key_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    stripe_webhook_secrets_encrypted: Mapped[list[str]] = mapped_column(JSONType, default=list)
    stripe_livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # Opt-in: also act on payment_method.detached / payment_method.automatically_updated.
    stripe_payment_method_events: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    update_payment_method_url: Mapped[str | None] = mapped_column(sa.String(2048))
    email_from: Mapped[str | None] = mapped_column(sa.String(320))
    # Days from finalization to an invoice's due date (its first automatic charge).
    net_terms_days: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # txr_ ids, in the order given; a rate with a country applies only to customers there.
    default_tax_rates: Mapped[list[str]] = mapped_column(
        JSONType, default=list, server_default=sa.text("'[]'")
    )
    # The seller on documents: the customer address shape, and one tax id {type, value, country}.
    address: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    tax_id: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.CheckConstraint("net_terms_days BETWEEN 0 AND 365", name="net_terms_days"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (sa.CheckConstraint("scope IN ('admin', 'ingest', 'finance')", name="scope"),)


class TaxRate(Base):
    """A tax rate (as Stripe's): only its name, description and being active ever change, so
    invoices that used it keep meaning what they said."""

    __tablename__ = "tax_rates"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(sa.String(50))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    percentage: Mapped[Decimal] = mapped_column(ExactDecimal())
    inclusive: Mapped[bool] = mapped_column(sa.Boolean)
    country: Mapped[str | None] = mapped_column(sa.String(2))
    jurisdiction: Mapped[str | None] = mapped_column(sa.String(50))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # Lists page newest first within a tenant.
    __table_args__ = (sa.Index("ix_tax_rates_tenant_id_id", "tenant_id", "id"),)
