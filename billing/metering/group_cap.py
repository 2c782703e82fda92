"""The cardinality cap: at most ``MAX_GROUPS`` groups per customer, grouped meter and subscription
period. An event that would open one more is rejected with ``too_many_groups``; events of groups
already open are accepted whatever the count.

Groups are recorded in ``usage_groups``: on SQLite in the transaction that stores their first
event, on PostgreSQL in a short transaction just before it (``commit``). Groups
never close, so the groups known to be recorded are remembered for the life of the process: a
batch whose groups are all remembered costs a set lookup per event. Only a batch with groups not
remembered looks them up, and counts the groups of the series where it would open one; on
PostgreSQL it first takes a transaction lock per (customer, meter), in key order, so that two
batches cannot both take the last slot; SQLite's single writer (the transaction holds the write
lock) serializes them already.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.inserts import insert_ignore
from billing.core.db.queries import any_of
from billing.metering.event_store_sqlite import sqlite_timestamps
from billing.metering.usage_models import UsageEvent, UsageGroup

if TYPE_CHECKING:
    from billing.metering.commit import Batch, Candidate

MAX_GROUPS = 1000
# tenant, customer, meter, period start, group key
GroupRef = tuple[str, str, str, datetime, str]
# customer, meter, period start
Series = tuple[str, str, datetime]
_CACHE_LIMIT = 1_000_000
# Groups per statement: 5 parameters each, under SQLite's limit of 32,766 parameters.
_PER_STATEMENT = 1000
_known: set[GroupRef] = set()

_LOCK_SQL = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
    " FROM (SELECT k FROM unnest(CAST($1 AS text[])) AS k ORDER BY k) AS keys"
)


@dataclass
class Admission:
    """The candidates that may be stored, the groups they would open (with the ids of their
    events), and the candidates that would open a group beyond the cap."""

    admitted: list[tuple[Candidate, Batch]]
    opening: dict[GroupRef, list[str]] = field(default_factory=dict)
    rejected: list[tuple[Candidate, Batch]] = field(default_factory=list)


def _ref(tenant_id: str, candidate: Candidate) -> GroupRef | None:
    if candidate.period_start is None:
        return None
    row = candidate.row
    return (tenant_id, row.customer_id, row.meter_id, candidate.period_start, row.group_key)


def all_known(tenant_id: str, candidates: Sequence[tuple[Candidate, Batch]]) -> bool:
    """Whether every group of these candidates is known to be recorded (nothing to decide)."""
    return all((ref := _ref(tenant_id, c)) is None or ref in _known for c, _ in candidates)


async def admit(
    session: AsyncSession, tenant_id: str, candidates: Sequence[tuple[Candidate, Batch]]
) -> Admission:
    """Decide, in order, which candidates may be stored and which would open a group beyond the cap."""
    unknown = {ref for c, _ in candidates if (ref := _ref(tenant_id, c)) is not None and ref not in _known}
    if not unknown:
        return Admission(list(candidates))
    await _lock(session, tenant_id, sorted({ref[1:3] for ref in unknown}))
    recorded, counts = await _look_up(session, tenant_id, sorted(unknown))
    remember(recorded)
    if recorded == unknown:
        return Admission(list(candidates))
    admission = _decide(tenant_id, candidates, counts, set())
    if admission.rejected:
        # An event whose id is already stored is a duplicate or a conflict: it opens nothing,
        # and must not take a slot from a later event.
        new = unknown - recorded
        openers = {c.row.event_id for c, _ in candidates if _ref(tenant_id, c) in new}
        admission = _decide(
            tenant_id, candidates, counts, await _stored_event_ids(session, tenant_id, openers)
        )
    return admission


def _decide(
    tenant_id: str,
    candidates: Sequence[tuple[Candidate, Batch]],
    counts: dict[Series, int],
    stored_ids: set[str],
) -> Admission:
    """In order: an event opens a group when its group is new and its series has a free slot."""
    admission = Admission([])
    counts = dict(counts)
    seen: set[str] = set()
    for candidate, batch in candidates:
        ref, event_id = _ref(tenant_id, candidate), candidate.row.event_id
        repeat = event_id in seen or event_id in stored_ids  # never stored: opens nothing
        seen.add(event_id)
        if ref is None or ref in _known or repeat:
            admission.admitted.append((candidate, batch))
        elif ref in admission.opening:
            admission.opening[ref].append(event_id)
            admission.admitted.append((candidate, batch))
        elif counts.get(ref[1:4], 0) < MAX_GROUPS:
            counts[ref[1:4]] = counts.get(ref[1:4], 0) + 1
            admission.opening[ref] = [event_id]
            admission.admitted.append((candidate, batch))
        else:
            admission.rejected.append((candidate, batch))
    return admission


async def record(
    session: AsyncSession, opening: dict[GroupRef, list[str]], stored: dict[str, int] | None = None
) -> list[GroupRef]:
    """Record the groups opened (by a stored event, when ``stored`` says which events were); the
    caller remembers them once committed."""
    opened = [
        ref for ref, event_ids in opening.items() if stored is None or any(e in stored for e in event_ids)
    ]
    if not opened:
        return opened
    ordered = sorted(opened)
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        rows = [
            {"tenant_id": t, "customer_id": c, "meter_id": m, "period_start": p, "group_key": k}
            for t, c, m, p, k in ordered
        ]
        await insert_ignore(session, UsageGroup.__table__, rows)
        return opened
    # SQLite: multi-row statements, each run in one step (as ``event_store_sqlite`` does).
    for first in range(0, len(ordered), _PER_STATEMENT):
        chunk = ordered[first : first + _PER_STATEMENT]
        starts = sqlite_timestamps([ref[3] for ref in chunk])
        values = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
        await connection.exec_driver_sql(
            "INSERT INTO usage_groups (tenant_id, customer_id, meter_id, period_start, group_key)"  # noqa: S608
            f" VALUES {values} ON CONFLICT DO NOTHING",
            tuple(v for n, (t, c, m, _, k) in enumerate(chunk) for v in (t, c, m, starts[n], k)),
        )
    return opened


def remember(refs: Iterable[GroupRef]) -> None:
    """Groups known to be committed."""
    refs = list(refs)
    if len(_known) + len(refs) > _CACHE_LIMIT:
        _known.clear()
    _known.update(refs)


async def _lock(session: AsyncSession, tenant_id: str, series: list[tuple[str, str]]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return  # the transaction holds SQLite's only write lock
    connection = await session.connection()
    keys = [f"usage_groups:{tenant_id}:{customer}:{meter}" for customer, meter in series]
    await connection.exec_driver_sql(_LOCK_SQL, (keys,))


async def _look_up(
    session: AsyncSession, tenant_id: str, refs: list[GroupRef]
) -> tuple[set[GroupRef], dict[Series, int]]:
    """Which of the groups are recorded, and how many groups each of their series has: one
    statement, where each group is a primary-key probe and each count an index range of at most
    ``MAX_GROUPS`` (the groups drive the loop, whatever the size of the table)."""
    recorded: set[GroupRef] = set()
    counts: dict[Series, int] = {}
    for first in range(0, len(refs), _PER_STATEMENT):
        chunk = refs[first : first + _PER_STATEMENT]
        for n, exists, count in await _per_group(session, tenant_id, [ref[1:] for ref in chunk]):
            if exists:
                recorded.add(chunk[n])
            counts[chunk[n][1:4]] = count
    return recorded, counts


# Per group (customer, meter, period start, group key), given as arrays (PostgreSQL) or VALUES
# (SQLite) with its index n: whether it is recorded, and how many groups its series has.
_MEASURES = (
    "EXISTS (SELECT 1 FROM usage_groups AS g WHERE g.tenant_id = {tenant} AND g.customer_id = {k}1"
    " AND g.meter_id = {k}2 AND g.period_start = {k}3 AND g.group_key = {k}4),"
    " (SELECT count(*) FROM usage_groups AS g WHERE g.tenant_id = {tenant} AND g.customer_id = {k}1"
    " AND g.meter_id = {k}2 AND g.period_start = {k}3)"
)


async def _per_group(
    session: AsyncSession, tenant_id: str, keys: list[tuple[str, str, datetime, str]]
) -> list[tuple[int, bool, int]]:
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        sql = (
            f"SELECT k.n, {_MEASURES.format(tenant='$1', k='k.c')} FROM unnest(CAST($2 AS text[]),"  # noqa: S608
            " CAST($3 AS text[]), CAST($4 AS timestamptz[]), CAST($5 AS text[]))"
            " WITH ORDINALITY AS k(c1, c2, c3, c4, n)"
        )
        arrays = (tenant_id, *([key[i] for key in keys] for i in range(4)))
        # Rows of raw SQL, which SQLAlchemy types as one column of Any: here (n, exists, count).
        rows = cast("Sequence[tuple[int, bool, int]]", (await connection.exec_driver_sql(sql, arrays)).all())
        return [(n - 1, exists, count) for n, exists, count in rows]
    starts = sqlite_timestamps([key[2] for key in keys])
    values = ", ".join(["(?, ?, ?, ?, ?)"] * len(keys))
    measured = _MEASURES.format(tenant="?", k="k.column")
    sql = f"SELECT json_group_array(json_array(k.column5, {measured})) FROM (VALUES {values}) AS k"  # noqa: S608
    params: tuple[object, ...] = (
        tenant_id,
        tenant_id,
        *(v for n, key in enumerate(keys) for v in (key[0], key[1], starts[n], key[3], n)),
    )
    found = (await connection.exec_driver_sql(sql, params)).scalar_one()
    return [(n, bool(exists), count) for n, exists, count in msgspec.json.decode(found)]


async def _stored_event_ids(session: AsyncSession, tenant_id: str, event_ids: set[str]) -> set[str]:
    """Those of the ids already stored: their events are duplicates or conflicts, never new."""
    if not event_ids:
        return set()
    table = UsageEvent.__table__
    query = sa.select(table.c.event_id).where(
        table.c.tenant_id == tenant_id,
        any_of(table.c.event_id, sorted(event_ids), session.get_bind().dialect.name),
    )
    return set(await session.scalars(query))
