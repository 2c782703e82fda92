"""Usage alerts and the crossings they record.

An alert watches one customer, or every customer of the tenant (of its currency, for spend),
over each customer's current billing period. A trigger is one threshold crossed by one customer
in one period: its unique key makes it fire once, whichever pass or replica inserts it first.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, ExactDecimal, JSONType, UTCDateTime, one_of

TYPES = ("usage_units", "spend_amount")
STATUSES = ("active", "archived")
RECURRENCES = ("per_period",)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    # None: every customer of the tenant (of ``currency`` for spend).
    customer_id: Mapped[str | None] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    # Required for usage_units; for spend_amount, None counts every usage line.
    meter_id: Mapped[str | None] = mapped_column(sa.ForeignKey("meters.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    type: Mapped[str] = mapped_column(sa.String(16))
    # Ascending: canonical decimal strings (usage_units) or minor units (spend_amount).
    thresholds: Mapped[list[Any]] = mapped_column(JSONType)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    recurrence: Mapped[str] = mapped_column(sa.String(16))
    email: Mapped[bool] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("ix_alerts_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_alerts_tenant_id_status", "tenant_id", "status"),
        sa.CheckConstraint(one_of("type", TYPES), name="type"),
        sa.CheckConstraint(one_of("status", STATUSES), name="status"),
        sa.CheckConstraint(one_of("recurrence", RECURRENCES), name="recurrence"),
    )


class AlertTrigger(Base):
    __tablename__ = "alert_triggers"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    alert_id: Mapped[str] = mapped_column(sa.ForeignKey("alerts.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    # Canonical, as the alert stores it, so that the unique key compares equal on SQLite's text.
    threshold: Mapped[Decimal] = mapped_column(ExactDecimal())
    value: Mapped[Decimal] = mapped_column(ExactDecimal())
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    triggered_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("alert_id", "customer_id", "period_start", "threshold"),
        sa.Index("ix_alert_triggers_alert_id_id", "alert_id", "id"),
    )
