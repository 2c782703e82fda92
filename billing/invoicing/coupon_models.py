"""Coupons (what a discount takes off) and discounts (a coupon redeemed by a customer).

A coupon is never removed: deleting it only stops new redemptions, so that the discounts made
from it run on and its code stays taken. ``times_redeemed`` counts discounts made from it, under
the coupon row's lock, so that ``max_redemptions`` holds under concurrent redemptions.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, ExactDecimal, JSONType, UTCDateTime, one_of

DURATIONS = ("once", "repeating", "forever")


class Coupon(Base):
    __tablename__ = "coupons"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    percent_off: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    amount_off: Mapped[int | None] = mapped_column(sa.BigInteger)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    duration: Mapped[str] = mapped_column(sa.String(16))
    duration_in_periods: Mapped[int | None] = mapped_column(sa.Integer)
    # The ids of the plans whose lines it discounts; None: every line (invoice items too).
    plan_ids: Mapped[list[str] | None] = mapped_column(JSONType)
    max_redemptions: Mapped[int | None] = mapped_column(sa.Integer)
    times_redeemed: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONType, key="metadata_", default=dict, server_default=sa.text("'{}'")
    )
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "code"),
        sa.Index("ix_coupons_tenant_id_id", "tenant_id", "id"),
        sa.CheckConstraint(one_of("duration", DURATIONS), name="duration"),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off IS NULL) AND (amount_off IS NULL) = (currency IS NULL)",
            name="off",
        ),
        sa.CheckConstraint("amount_off > 0", name="amount_off"),
        sa.CheckConstraint(
            "(duration = 'repeating') = (duration_in_periods IS NOT NULL)", name="duration_in_periods"
        ),
        sa.CheckConstraint("times_redeemed >= 0", name="times_redeemed"),
    )


class Discount(Base):
    """A customer's coupon: from ``start`` until ``end`` (None: no end, or none yet for
    ``once``); ``removed_at`` by DELETE; ``ended_at`` when a ``once`` discount was used (by
    ``invoice_id``) or the customer was archived."""

    __tablename__ = "discounts"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    coupon_id: Mapped[str] = mapped_column(sa.ForeignKey("coupons.id", ondelete="CASCADE"))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    invoice_id: Mapped[str | None] = mapped_column(sa.String(40))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("ix_discounts_tenant_id_id", "tenant_id", "id"),
        # Invoices look up their customers' discounts in bulk.
        sa.Index("ix_discounts_tenant_id_customer_id", "tenant_id", "customer_id"),
        sa.Index("ix_discounts_coupon_id", "coupon_id"),
    )
