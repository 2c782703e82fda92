"""Customers: who is billed, in which currency, time zone and language, and how they pay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, JSONType, UTCDateTime, one_of

PAYMENT_STATUSES = ("ok", "action_required", "delinquent")
TAX_EXEMPT = ("none", "exempt", "reverse")


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(sa.String(128))
    email: Mapped[str | None] = mapped_column(sa.String(320))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    currency: Mapped[str] = mapped_column(sa.String(3))
    # None: the tenant's billing_timezone applies.
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    locale: Mapped[str] = mapped_column(sa.String(16), default="en")
    provider_customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    default_payment_method: Mapped[str | None] = mapped_column(sa.String(255))
    # The default card, when the tenant tells us: expiry notices for cards the provider never reports.
    card_id: Mapped[str | None] = mapped_column(sa.String(255))
    card_brand: Mapped[str | None] = mapped_column(sa.String(32))
    card_last4: Mapped[str | None] = mapped_column(sa.String(4))
    card_exp_month: Mapped[int | None] = mapped_column(sa.Integer)
    card_exp_year: Mapped[int | None] = mapped_column(sa.Integer)
    # ``metadata`` is reserved on declarative classes: the attribute carries a trailing underscore.
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict)
    payment_status: Mapped[str] = mapped_column(sa.String(20), default="ok")
    # Set once by archiving (as Stripe's delete, keeping the history); never cleared.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # None: the tenant's net_terms_days apply.
    net_terms_days: Mapped[int | None] = mapped_column(sa.Integer)
    # {line1, line2, city, postal_code, state, country}; its country picks country-bound default rates.
    address: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    tax_exempt: Mapped[str] = mapped_column(sa.String(16), default="none", server_default="none")
    # [{type, value, country}], compact and upper case.
    tax_ids: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=sa.text("'[]'")
    )
    # txr_ ids; None: the tenant's default_tax_rates apply, []: no tax.
    tax_rates: Mapped[list[str] | None] = mapped_column(JSONType)
    credit_balance_low_threshold: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "external_id"),
        # Lists page newest first within a tenant.
        sa.Index("ix_customers_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_customers_tenant_id_provider_customer_id", "tenant_id", "provider_customer_id"),
        sa.Index("ix_customers_card_expiry", "card_exp_year", "card_exp_month"),
        sa.CheckConstraint(one_of("payment_status", PAYMENT_STATUSES), name="payment_status"),
        sa.CheckConstraint("net_terms_days BETWEEN 0 AND 365", name="net_terms_days"),
        sa.CheckConstraint(one_of("tax_exempt", TAX_EXEMPT), name="tax_exempt"),
        sa.CheckConstraint("credit_balance_low_threshold >= 0", name="credit_balance_low_threshold"),
    )
