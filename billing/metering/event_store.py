"""Writing accepted usage: event rows, their hourly rollups and their distinct values.

Ingestion's hot path, so it hands the driver whole columns or rows of plain values, with no
per-value processing between them; the SQL below must therefore store exactly what the
models' column types would (``ExactDecimal``, ``UTCDateTime``, JSON), and the tests read every
row back through the models.

- PostgreSQL: one statement inserts the events (ON CONFLICT DO NOTHING) from arrays and folds
  the rows it inserted into the rollups in SQL; the distinct values follow in a second one.
- SQLite: one multi-row INSERT ... RETURNING, then the rollups folded in Python and upserted
  (SQLite has no exact decimal arithmetic of its own: ``dec_add``/``dec_max`` are ours).

Rows are written in key order everywhere, so that concurrent batches cannot deadlock: events by
id, then rollups and distinct values by (customer, meter, hour).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from billing import money


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


async def store(
    session: AsyncSession, tenant_id: str, events: Sequence[NewEvent], now: datetime
) -> dict[str, int]:
    """Insert the events whose ids are new, sorted by id, with their rollups and distinct values;
    return {event id: seq} for those rows."""
    if not events:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        return await _store_postgresql(session, tenant_id, events, now)
    return await _store_sqlite(session, tenant_id, events, now)


# --- PostgreSQL ----------------------------------------------------------------------------------

# The aggregates are those of rollups.Partial: the latest value is that of the greatest
# (timestamp, seq). Hours are UTC hours whatever the session's time zone.
_PG_EVENTS_AND_ROLLUPS = """
WITH input AS (
    SELECT * FROM unnest(
        CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS text[]), CAST($4 AS timestamptz[]),
        CAST($5 AS numeric[]), CAST($6 AS text[]), CAST($7 AS text[])
    ) WITH ORDINALITY AS t(event_id, customer_id, meter_id, ts, value, properties, payload_hash, n)
), new AS (
    INSERT INTO usage_events
        (tenant_id, event_id, customer_id, meter_id, "timestamp", value, properties, payload_hash,
         received_at)
    SELECT $8, event_id, customer_id, meter_id, ts, value, CAST(properties AS jsonb), payload_hash, $9
    FROM input ORDER BY n
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING event_id, seq, customer_id, meter_id, "timestamp", value
), folded AS (
    SELECT customer_id, meter_id, date_trunc('hour', "timestamp", 'UTC') AS hour,
           count(*) AS event_count, sum(value) AS value_sum, max(value) AS value_max,
           (array_agg(value ORDER BY "timestamp" DESC, seq DESC))[1] AS latest_value,
           max("timestamp") AS latest_at,
           (array_agg(seq ORDER BY "timestamp" DESC, seq DESC))[1] AS latest_seq
    FROM new GROUP BY customer_id, meter_id, hour
), rolled AS (
    INSERT INTO usage_rollups AS r
        (tenant_id, customer_id, meter_id, hour, event_count, value_sum, value_max, latest_value,
         latest_at, latest_seq)
    SELECT $8, customer_id, meter_id, hour, event_count, value_sum, value_max, latest_value,
           latest_at, latest_seq
    FROM folded ORDER BY customer_id, meter_id, hour
    ON CONFLICT (tenant_id, customer_id, meter_id, hour) DO UPDATE SET
        event_count = r.event_count + excluded.event_count,
        value_sum = r.value_sum + excluded.value_sum,
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
INSERT INTO usage_unique_values (tenant_id, customer_id, meter_id, hour, value)
SELECT DISTINCT $1, customer_id, meter_id, date_trunc('hour', ts, 'UTC') AS hour, value
FROM unnest(CAST($2 AS text[]), CAST($3 AS text[]), CAST($4 AS timestamptz[]), CAST($5 AS text[]))
    AS t(customer_id, meter_id, ts, value)
ORDER BY customer_id, meter_id, hour, value
ON CONFLICT DO NOTHING
"""


async def _store_postgresql(
    session: AsyncSession, tenant_id: str, events: Sequence[NewEvent], now: datetime
) -> dict[str, int]:
    connection = await session.connection()
    columns = (
        [e.event_id for e in events],
        [e.customer_id for e in events],
        [e.meter_id for e in events],
        [e.timestamp for e in events],
        [e.value for e in events],
        [e.properties for e in events],
        [e.payload_hash for e in events],
    )
    result = await connection.exec_driver_sql(_PG_EVENTS_AND_ROLLUPS, (*columns, tenant_id, now))
    new = dict(result.all())
    uniques = [e for e in events if e.unique_value is not None and e.event_id in new]
    if uniques:
        await connection.exec_driver_sql(
            _PG_UNIQUES,
            (
                tenant_id,
                [e.customer_id for e in uniques],
                [e.meter_id for e in uniques],
                [e.timestamp for e in uniques],
                [e.unique_value for e in uniques],
            ),
        )
    return new


# --- SQLite --------------------------------------------------------------------------------------

_SQLITE_EVENT_COLUMNS = (
    "tenant_id, event_id, customer_id, meter_id, timestamp, value, properties, payload_hash, received_at"
)
_SQLITE_ROLLUP_UPSERT = """
INSERT INTO usage_rollups
    (tenant_id, customer_id, meter_id, hour, event_count, value_sum, value_max, latest_value,
     latest_at, latest_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant_id, customer_id, meter_id, hour) DO UPDATE SET
    event_count = event_count + excluded.event_count,
    value_sum = dec_add(value_sum, excluded.value_sum),
    value_max = dec_max(value_max, excluded.value_max),
    latest_value = CASE WHEN (excluded.latest_at, excluded.latest_seq) > (latest_at, latest_seq)
                        THEN excluded.latest_value ELSE latest_value END,
    latest_at = CASE WHEN (excluded.latest_at, excluded.latest_seq) > (latest_at, latest_seq)
                     THEN excluded.latest_at ELSE latest_at END,
    latest_seq = CASE WHEN (excluded.latest_at, excluded.latest_seq) > (latest_at, latest_seq)
                      THEN excluded.latest_seq ELSE latest_seq END
"""
_SQLITE_UNIQUES = """
INSERT INTO usage_unique_values (tenant_id, customer_id, meter_id, hour, value)
VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
"""
# Rows per INSERT statement: 9 parameters each, under SQLite's limit of 32,766.
_SQLITE_ROWS_PER_INSERT = 1000
_rfc3339 = msgspec.json.Encoder()
_WHOLE_SECOND = re.compile(rb'(:\d\d)Z"')


def sqlite_timestamps(values: Sequence[datetime]) -> list[str]:
    """How ``UTCDateTime`` stores aware UTC datetimes on SQLite: SQLAlchemy's text format,
    ``2026-11-21 13:05:09.000000``. Made from msgspec's RFC 3339 (``2026-11-21T13:05:09Z``,
    microseconds only when there are some) for the whole list at once: datetime's own
    formatting costs microseconds per value."""
    encoded = _rfc3339.encode(values)
    encoded = _WHOLE_SECOND.sub(rb'\1.000000"', encoded).replace(b'Z"', b'"').replace(b"T", b" ")
    return msgspec.json.decode(encoded)


async def _store_sqlite(
    session: AsyncSession, tenant_id: str, events: Sequence[NewEvent], now: datetime
) -> dict[str, int]:
    connection = await session.connection()
    received_at, *timestamps = sqlite_timestamps([now, *(e.timestamp for e in events)])
    new: dict[str, int] = {}
    for first in range(0, len(events), _SQLITE_ROWS_PER_INSERT):
        chunk = range(first, min(first + _SQLITE_ROWS_PER_INSERT, len(events)))
        params: list[Any] = []
        for n in chunk:
            e = events[n]
            params += (
                tenant_id,
                e.event_id,
                e.customer_id,
                e.meter_id,
                timestamps[n],
                format(e.value, "f"),
                e.properties,
                e.payload_hash,
                received_at,
            )
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        sql = (
            f"INSERT INTO usage_events ({_SQLITE_EVENT_COLUMNS}) VALUES {values} "  # noqa: S608
            "ON CONFLICT DO NOTHING RETURNING event_id, seq"
        )
        new.update((await connection.exec_driver_sql(sql, tuple(params))).all())
    stored = [(e, timestamps[n], new[e.event_id]) for n, e in enumerate(events) if e.event_id in new]
    if stored:
        await connection.exec_driver_sql(_SQLITE_ROLLUP_UPSERT, _sqlite_rollups(tenant_id, stored))
    uniques = {
        (tenant_id, e.customer_id, e.meter_id, _hour(at), e.unique_value)
        for e, at, _ in stored
        if e.unique_value is not None
    }
    if uniques:
        await connection.exec_driver_sql(_SQLITE_UNIQUES, sorted(uniques))
    return new


def _hour(timestamp: str) -> str:
    """The UTC hour of a stored timestamp, in the same text format."""
    return f"{timestamp[:13]}:00:00.000000"


def _sqlite_rollups(tenant_id: str, stored: list[tuple[NewEvent, str, int]]) -> list[tuple[Any, ...]]:
    """The rows of new events folded into one rollup row per (customer, meter, hour), sorted, as
    ``rollups.Partial`` folds them: the stored timestamp texts order as the times do."""
    folded: dict[tuple[str, str, str], list[Any]] = {}
    for e, at, seq in stored:
        key = (e.customer_id, e.meter_id, _hour(at))
        acc = folded.get(key)
        if acc is None:
            folded[key] = [1, e.value, e.value, e.value, at, seq]
            continue
        acc[0] += 1
        acc[1] = money.exact_add(acc[1], e.value)
        acc[2] = max(acc[2], e.value)
        if (at, seq) > (acc[4], acc[5]):
            acc[3:6] = e.value, at, seq
    return [
        (tenant_id, *key, count, format(total, "f"), format(top, "f"), format(latest, "f"), at, seq)
        for key, (count, total, top, latest, at, seq) in sorted(folded.items())
    ]
