"""Meters: what is counted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, JSONType, UTCDateTime, one_of

AGGREGATIONS = ("sum", "count", "max", "unique_count", "latest")


class Meter(Base):
    __tablename__ = "meters"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    aggregation: Mapped[str] = mapped_column(sa.String(16))
    # The event property whose distinct values are counted; set exactly for unique_count.
    unique_property: Mapped[str | None] = mapped_column(sa.String(128))
    unit: Mapped[str | None] = mapped_column(sa.String(64))
    # The properties that group usage (0..3 keys, see ``groups``) and whether values may be
    # negative: both fixed at creation, as usage is recorded under them.
    group_by: Mapped[list[Any]] = mapped_column(JSONType, default=list, server_default="[]")
    allow_negative: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "key"),
        sa.CheckConstraint(one_of("aggregation", AGGREGATIONS), name="aggregation"),
        sa.CheckConstraint(
            "(aggregation = 'unique_count' AND unique_property IS NOT NULL)"
            " OR (aggregation <> 'unique_count' AND unique_property IS NULL)",
            name="unique_property",
        ),
    )
