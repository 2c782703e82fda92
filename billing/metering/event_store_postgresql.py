"""PostgreSQL's half of ``event_store``: the events and their rollups in one statement.

The events come as arrays, one per column; timestamps and decimals as text, which PostgreSQL
parses for a fraction of what asyncpg's binary encoding costs in Python. The statement
inserts them with ON CONFLICT DO NOTHING and folds the rows it did insert into the rollups in
SQL, with PostgreSQL's exact NUMERIC arithmetic, per group key (which comes with the input, as
the events table does not store it). The distinct values follow in a second
statement, so that every batch takes its row locks in the same order: events, rollups, values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, cast

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from billing.metering.event_store import NewEvent

_json = msgspec.json.Encoder()

# The aggregates are those of rollups.Partial: the latest value is that of the greatest
# (timestamp, seq). Hours are UTC hours whatever the session's time zone.
_PG_EVENTS_AND_ROLLUPS = """
WITH input AS (
    SELECT * FROM unnest(
        CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS text[]),
        CAST(CAST($4 AS text[]) AS timestamptz[]), CAST(CAST($5 AS text[]) AS numeric[]),
        CAST($6 AS text[]), CAST($7 AS text[]), CAST($10 AS text[]), CAST(CAST($11 AS text[]) AS numeric[])
    ) WITH ORDINALITY
        AS t(event_id, customer_id, meter_id, ts, value, properties, payload_hash, group_key, fee, n)
), new AS (
    INSERT INTO usage_events
        (tenant_id, event_id, customer_id, meter_id, "timestamp", value, properties, payload_hash,
         received_at, fee)
    SELECT $8, event_id, customer_id, meter_id, ts, value, CAST(properties AS jsonb), payload_hash, $9, fee
    FROM input ORDER BY n
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING event_id, seq, customer_id, meter_id, "timestamp", value, fee
), folded AS (
    SELECT new.customer_id, new.meter_id, date_trunc('hour', new."timestamp", 'UTC') AS hour, input.group_key,
           count(*) AS event_count, sum(new.value) AS value_sum, max(new.value) AS value_max,
           (array_agg(new.value ORDER BY new."timestamp" DESC, new.seq DESC))[1] AS latest_value,
           max(new."timestamp") AS latest_at,
           (array_agg(new.seq ORDER BY new."timestamp" DESC, new.seq DESC))[1] AS latest_seq,
           coalesce(sum(new.fee), 0) AS fee_sum
    FROM new JOIN input USING (event_id)
    GROUP BY new.customer_id, new.meter_id, hour, input.group_key
), rolled AS (
    INSERT INTO usage_rollups AS r
        (tenant_id, customer_id, meter_id, hour, group_key, event_count, value_sum, value_max,
         latest_value, latest_at, latest_seq, fee_sum)
    SELECT $8, customer_id, meter_id, hour, group_key, event_count, value_sum, value_max, latest_value,
           latest_at, latest_seq, fee_sum
    FROM folded ORDER BY customer_id, meter_id, hour, group_key
    ON CONFLICT (tenant_id, customer_id, meter_id, hour, group_key) DO UPDATE SET
        event_count = r.event_count + excluded.event_count,
        value_sum = r.value_sum + excluded.value_sum,
        fee_sum = r.fee_sum + excluded.fee_sum,
        value_max = greatest(r.value_max, excluded.value_max),
        latest_value = CASE WHEN (excluded.latest_at, excluded.latest_seq) > (r.latest_at, r.latest_seq)
                            THEN excluded.latest_value ELSE r.latest_value END,
        latest_at = CASE WHEN (excluded.latest_at, excluded.latest_seq) > (r.latest_at, r.latest_seq)
                         THEN excluded.latest_at ELSE r.latest_at END,
        latest_seq = CASE WHEN (excluded.latest_at, excluded.latest_seq) > (r.latest_at, r.latest_seq)
                          THEN excluded.latest_seq ELSE r.latest_seq END
)
SELECT event_id, seq FROM new
"""

_PG_UNIQUES = """
INSERT INTO usage_unique_values (tenant_id, customer_id, meter_id, hour, group_key, value)
SELECT DISTINCT $1, customer_id, meter_id, date_trunc('hour', ts, 'UTC') AS hour, group_key, value
FROM unnest(
    CAST($2 AS text[]), CAST($3 AS text[]), CAST($4 AS timestamptz[]), CAST($5 AS text[]),
    CAST($6 AS text[])
) AS t(customer_id, meter_id, ts, group_key, value)
ORDER BY customer_id, meter_id, hour, group_key, value
ON CONFLICT DO NOTHING
"""


def _rfc3339(values: list[datetime]) -> list[str]:
    """RFC 3339 texts of UTC datetimes, made by msgspec for the whole list at once."""
    return msgspec.json.decode(_json.encode(values))


async def store(
    session: AsyncSession, tenant_id: str, events: Sequence[NewEvent], now: datetime
) -> dict[str, int]:
    connection = await session.connection()
    columns = (
        [e.event_id for e in events],
        [e.customer_id for e in events],
        [e.meter_id for e in events],
        _rfc3339([e.timestamp for e in events]),
        [format(e.value, "f") for e in events],
        [e.properties for e in events],
        [e.payload_hash for e in events],
    )
    group_keys = [e.group_key for e in events]
    fees = [None if e.fee is None else format(e.fee, "f") for e in events]
    result = await connection.exec_driver_sql(
        _PG_EVENTS_AND_ROLLUPS, (*columns, tenant_id, now, group_keys, fees)
    )
    # Rows of raw SQL, which SQLAlchemy types as one column of Any: here (event_id, seq).
    new: dict[str, int] = dict(cast("Sequence[tuple[str, int]]", result.all()))
    uniques = [e for e in events if e.unique_value is not None and e.event_id in new]
    if uniques:
        await connection.exec_driver_sql(
            _PG_UNIQUES,
            (
                tenant_id,
                [e.customer_id for e in uniques],
                [e.meter_id for e in uniques],
                [e.timestamp for e in uniques],
                [e.group_key for e in uniques],
                [e.unique_value for e in uniques],
            ),
        )
    return new
