"""SQLite's half of ``event_store``: a few multi-row statements, each run in a single step.

Every statement runs in one step: multi-row VALUES without RETURNING, and reads that return one
JSON document instead of rows. Python's sqlite3 would otherwise step once per row, letting go of
the GIL and taking it back each time (from an event loop busy with other requests), and a SQL
function of ours would be called back into Python once per row.

SQLite has no exact decimal arithmetic, so the rollups are merged here, in Python: the existing
rows of the batch's keys are read, merged with the batch, and written back. That read-then-write
is safe because the transaction holds SQLite's only write lock (``BEGIN IMMEDIATE``) from before
the read until the commit: no other writer, in this process or another, can come in between. The
same lock makes the rows numbered above the greatest ``seq`` before the insert exactly the rows
this insert added.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from billing.core import money

if TYPE_CHECKING:
    from billing.metering.event_store import NewEvent

# Rows per statement: at most 12 parameters a row, under SQLite's limit of 32,766 parameters.
_ROWS_PER_STATEMENT = 1000
_EVENT_COLUMNS = (
    "tenant_id, event_id, customer_id, meter_id, timestamp, value, properties, payload_hash, received_at, fee"
)
_ROLLUP_COLUMNS = (
    "tenant_id, customer_id, meter_id, hour, group_key, event_count, value_sum, value_max, latest_value, "
    "latest_at, latest_seq, fee_sum"
)
_ZERO = Decimal(0)
# (customer, meter, hour, group key) -> [count, sum, max, latest value, latest at, latest seq, fee sum]
Folded = dict[tuple[str, str, str, str], list[Any]]
_rfc3339 = msgspec.json.Encoder()
_WHOLE_SECOND = re.compile(rb'(:\d\d)Z"')


async def store(
    session: AsyncSession, tenant_id: str, events: Sequence[NewEvent], now: datetime
) -> dict[str, int]:
    connection = await session.connection()
    received_at, *timestamps = sqlite_timestamps([now, *(e.timestamp for e in events)])
    before = await _one(connection, "SELECT coalesce(max(seq), 0) FROM usage_events", ())
    for chunk in _chunks(len(events)):
        rows = [
            (
                tenant_id,
                events[n].event_id,
                events[n].customer_id,
                events[n].meter_id,
                timestamps[n],
                format(events[n].value, "f"),
                events[n].properties,
                events[n].payload_hash,
                received_at,
                None if events[n].fee is None else format(events[n].fee, "f"),
            )
            for n in chunk
        ]
        await _insert(connection, "usage_events", _EVENT_COLUMNS, rows, "ON CONFLICT DO NOTHING")
    new: dict[str, int] = dict(
        msgspec.json.decode(
            await _one(
                connection,
                "SELECT json_group_array(json_array(event_id, seq)) FROM usage_events WHERE seq > ?",
                (before,),
            )
        )
    )
    stored = [(e, timestamps[n], new[e.event_id]) for n, e in enumerate(events) if e.event_id in new]
    folded = _fold(stored)
    for keys in _batches(sorted(folded)):
        await _merge_stored(connection, tenant_id, {key: folded[key] for key in keys})
    uniques = sorted(
        {
            (tenant_id, e.customer_id, e.meter_id, _hour(at), e.group_key, e.unique_value)
            for e, at, _ in stored
            if e.unique_value is not None
        }
    )
    for chunk in _chunks(len(uniques)):
        await _insert(
            connection,
            "usage_unique_values",
            "tenant_id, customer_id, meter_id, hour, group_key, value",
            [uniques[n] for n in chunk],
            "ON CONFLICT DO NOTHING",
        )
    return new


def sqlite_timestamps(values: Sequence[datetime]) -> list[str]:
    """How ``UTCDateTime`` stores aware UTC datetimes on SQLite: SQLAlchemy's text format,
    ``2026-11-21 13:05:09.000000``. Made from msgspec's RFC 3339 (``2026-11-21T13:05:09Z``,
    microseconds only when there are some) for the whole list at once: datetime's own
    formatting costs microseconds per value."""
    encoded = _rfc3339.encode(values)
    encoded = _WHOLE_SECOND.sub(rb'\1.000000"', encoded).replace(b'Z"', b'"').replace(b"T", b" ")
    return msgspec.json.decode(encoded)


def _hour(timestamp: str) -> str:
    """The UTC hour of a stored timestamp, in the same text format."""
    return f"{timestamp[:13]}:00:00.000000"


def _fold(stored: list[tuple[NewEvent, str, int]]) -> Folded:
    """The new events folded per rollup key (stored timestamp texts order as the times do)."""
    folded: Folded = {}
    for e, at, seq in stored:
        key = (e.customer_id, e.meter_id, _hour(at), e.group_key)
        acc = folded.get(key)
        if acc is None:
            folded[key] = [1, e.value, e.value, e.value, at, seq, _ZERO if e.fee is None else e.fee]
        else:
            _merge(acc, 1, e.value, e.value, e.value, at, seq, e.fee)
    return folded


def _merge(
    acc: list[Any],
    count: int,
    total: Decimal,
    top: Decimal,
    latest: Decimal,
    at: str,
    seq: int,
    fees: Decimal | None,
) -> None:
    acc[0] += count
    acc[1] = money.exact_add(acc[1], total)
    acc[2] = max(acc[2], top)
    if (at, seq) > (acc[4], acc[5]):
        acc[3:6] = latest, at, seq
    if fees:
        acc[6] = money.exact_add(acc[6], fees)


async def _merge_stored(connection: AsyncConnection, tenant_id: str, folded: Folded) -> None:
    """Merge the stored rollup rows of these keys into ``folded`` and write the results back."""
    keys = list(folded)
    params = (*(part for key in keys for part in key), tenant_id)
    found = await _one(connection, _stored_rollups_sql(len(keys)), params)
    for customer, meter, hour, group, count, total, top, latest, at, seq, fees in msgspec.json.decode(found):
        _merge(
            folded[(customer, meter, hour, group)],
            count,
            Decimal(total),
            Decimal(top),
            Decimal(latest),
            at,
            seq,
            None if fees == "0" else Decimal(fees),
        )
    rows = [
        (
            tenant_id,
            *key,
            count,
            format(total, "f"),
            format(top, "f"),
            format(latest, "f"),
            at,
            seq,
            format(fees, "f"),
        )
        for key, (count, total, top, latest, at, seq, fees) in folded.items()
    ]
    overwrite = ", ".join(f"{column} = excluded.{column}" for column in _ROLLUP_COLUMNS.split(", ")[5:])
    await _insert(
        connection,
        "usage_rollups",
        _ROLLUP_COLUMNS,
        rows,
        f"ON CONFLICT (tenant_id, customer_id, meter_id, hour, group_key) DO UPDATE SET {overwrite}",
    )


def _stored_rollups_sql(keys: int) -> str:
    """The stored rollup rows of ``keys`` keys, as one JSON array; CROSS JOIN keeps the keys as
    the outer loop, so that each is one primary-key lookup."""
    return (
        "SELECT json_group_array(json_array(k.column1, k.column2, k.column3, k.column4,"  # noqa: S608
        " r.event_count, r.value_sum, r.value_max, r.latest_value, r.latest_at, r.latest_seq, r.fee_sum))"
        f" FROM (VALUES {_placeholders(4, keys)}) AS k"
        " CROSS JOIN usage_rollups AS r ON r.tenant_id = ? AND r.customer_id = k.column1"
        " AND r.meter_id = k.column2 AND r.hour = k.column3 AND r.group_key = k.column4"
    )


async def _insert(
    connection: AsyncConnection, table: str, columns: str, rows: list[tuple[Any, ...]], conflict: str
) -> None:
    sql = f"INSERT INTO {table} ({columns}) VALUES {_placeholders(len(rows[0]), len(rows))} {conflict}"  # noqa: S608
    await connection.exec_driver_sql(sql, tuple(value for row in rows for value in row))


async def _one(connection: AsyncConnection, sql: str, params: tuple[Any, ...]) -> Any:
    return (await connection.exec_driver_sql(sql, params)).scalar_one()


def _placeholders(columns: int, rows: int) -> str:
    row = f"({', '.join('?' * columns)})"
    return ", ".join([row] * rows)


def _chunks(count: int) -> Iterator[range]:
    for first in range(0, count, _ROWS_PER_STATEMENT):
        yield range(first, min(first + _ROWS_PER_STATEMENT, count))


def _batches(keys: list[tuple[str, str, str, str]]) -> Iterator[list[tuple[str, str, str, str]]]:
    for chunk in _chunks(len(keys)):
        yield keys[chunk.start : chunk.stop]
