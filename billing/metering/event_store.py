"""Writing accepted usage: event rows, their hourly rollups and their distinct values.

Ingestion's hot path, so it hands the driver whole columns or rows of plain values, with no
per-value processing between them; the SQL of ``event_store_postgresql`` and
``event_store_sqlite`` must therefore store exactly what the models' column types would
(``ExactDecimal``, ``UTCDateTime``, JSON), and the tests read every row back through the models.

Rollup rows hold what ``rollups.Partial`` holds: the count, the exact sum, the max, and the value
of the latest event, the one with the greatest (timestamp, seq); and the exact sum of the
events' fees (percentage prices), 0 where none has one. Rows are written in key order,
so that concurrent batches cannot deadlock: events by id, then rollups and distinct values by
(customer, meter, hour, group key).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from billing.metering import event_store_postgresql, event_store_sqlite


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event about to be stored: resolved, validated, canonical."""

    event_id: str
    customer_id: str
    meter_id: str
    timestamp: datetime  # aware UTC
    value: Decimal  # canonical (money.parse_decimal)
    properties: str | None  # JSON text
    payload_hash: str
    unique_value: str | None
    group_key: str = ""  # groups.encode of its group on a meter with group_by
    fee: Decimal | None = None  # exact, minor units: only under a percentage price


async def store(
    session: AsyncSession, tenant_id: str, events: Sequence[NewEvent], now: datetime
) -> dict[str, int]:
    """Insert the events whose ids are new, sorted by id, with their rollups and distinct values;
    return {event id: seq} for those rows."""
    if not events:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        return await event_store_postgresql.store(session, tenant_id, events, now)
    return await event_store_sqlite.store(session, tenant_id, events, now)
