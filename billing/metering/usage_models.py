"""Usage events as accepted, and the hourly rollups kept consistent with them.

The events table has no foreign keys: ingestion checks customers and meters in the same
transaction, and the unique constraint is the only check the hot insert path pays for.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, ExactDecimal, JSONType, UTCDateTime

# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigSerial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNIQUE_VALUE_MAX_LENGTH = 256


class UsageEvent(Base):
    __tablename__ = "usage_events"

    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(sa.String(40))
    event_id: Mapped[str] = mapped_column(sa.String(128))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    meter_id: Mapped[str] = mapped_column(sa.String(40))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[Decimal] = mapped_column(ExactDecimal())
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    payload_hash: Mapped[str] = mapped_column(sa.String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    invoice_id: Mapped[str | None] = mapped_column(sa.String(40))
    # The fee of an event whose price is a percentage price, exact, in minor units, computed at
    # ingestion with the plan of its subscription; None for every other event.
    fee: Mapped[Decimal | None] = mapped_column(ExactDecimal())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "event_id"),
        sa.Index("ix_usage_events_customer_meter_time", "tenant_id", "customer_id", "meter_id", "timestamp"),
        # Events not yet on a finalized invoice: few at any time, found fast for late usage.
        sa.Index(
            "ix_usage_events_unbilled",
            "tenant_id",
            "customer_id",
            "timestamp",
            postgresql_where=sa.text("invoice_id IS NULL"),
            sqlite_where=sa.text("invoice_id IS NULL"),
        ),
    )


class UsageRollup(Base):
    """Per (tenant, customer, meter, UTC hour): everything any aggregation needs from that hour."""

    __tablename__ = "usage_rollups"

    tenant_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    meter_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    # ``groups.encode`` of the events' group; "" on meters without group_by.
    group_key: Mapped[str] = mapped_column(
        sa.Text, primary_key=True, default="", server_default=sa.text("''")
    )
    event_count: Mapped[int] = mapped_column(sa.BigInteger)
    value_sum: Mapped[Decimal] = mapped_column(ExactDecimal())
    value_max: Mapped[Decimal] = mapped_column(ExactDecimal())
    latest_value: Mapped[Decimal] = mapped_column(ExactDecimal())
    latest_at: Mapped[datetime] = mapped_column(UTCDateTime())
    latest_seq: Mapped[int] = mapped_column(sa.BigInteger)
    # The exact sum of the hour's event fees (0 when none has one).
    fee_sum: Mapped[Decimal] = mapped_column(
        ExactDecimal(), default=Decimal(0), server_default=sa.text("'0'")
    )


class UsageUniqueValue(Base):
    """Distinct values of a unique_count meter's property, per hour: exact distinct counts over
    any range come from ``COUNT(DISTINCT value)``, never from adding hourly counts."""

    __tablename__ = "usage_unique_values"

    tenant_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    meter_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    group_key: Mapped[str] = mapped_column(
        sa.Text, primary_key=True, default="", server_default=sa.text("''")
    )
    value: Mapped[str] = mapped_column(sa.String(UNIQUE_VALUE_MAX_LENGTH), primary_key=True)


class UsageGroup(Base):
    """The groups (``groups.encode`` keys) each customer opened on a grouped meter in each
    subscription period: what the cardinality cap counts (``group_cap``)."""

    __tablename__ = "usage_groups"

    tenant_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    meter_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    group_key: Mapped[str] = mapped_column(sa.Text, primary_key=True)


class UsageCursor(Base):
    """How far a consumer of new usage (alerts, threshold billing) has read the events, per scope
    (a tenant id, or ``*`` for all): see ``recent_usage``."""

    __tablename__ = "usage_cursors"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    high_seq: Mapped[int] = mapped_column(sa.BigInteger)
    previous_high_seq: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
