"""Committing validated usage batches, and telling each event what became of it.

The unique constraint decides what is new (``event_store`` inserts with ON CONFLICT DO NOTHING,
never after a lookup); the payload hash stored with each event then tells a duplicate from a
conflict. Nothing is answered before the commit.

On SQLite, concurrent batches are committed together (group commit, through a ``Coalescer``):
SQLite has one writer, and what a commit costs is mostly the pages it writes, which concurrent
batches largely share (the same hot index pages and rollup rows). The events of a group are
taken in the order the batches arrived, so a group answers exactly what one transaction per batch
would have, in that order. A group that fails is retried one batch per transaction, so that a
batch never fails for its neighbour's sake. PostgreSQL commits each batch on its own: its
backends work in parallel.
"""

from __future__ import annotations

import itertools
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.coalescer import Coalescer
from billing.core.db.engine import Database
from billing.core.db.queries import any_of
from billing.metering import event_store, group_cap
from billing.metering.coverage import Coverage, CoverageSource
from billing.metering.event_store import NewEvent
from billing.metering.usage_models import UsageEvent

# Batches per SQLite transaction: up to 8,000 events, a few hundred milliseconds of writing.
BATCHES_PER_GROUP = 8
log = structlog.get_logger("billing.metering.commit")


class EventResult(msgspec.Struct, omit_defaults=True, gc=False):
    index: int
    id: str | None
    status: str
    code: str | None = None
    message: str | None = None


@dataclass(slots=True)
class Candidate:
    """A valid event of a batch, resolved to its customer and meter, ready to store."""

    index: int
    row: NewEvent
    subscription: Coverage
    period_start: datetime | None = None  # of the subscription period, on a meter with group_by


@dataclass(slots=True)
class Batch:
    """A request's valid events; ``results`` (by index in the request) are filled in on commit."""

    tenant_id: str
    now: datetime
    candidates: list[Candidate]
    results: list[EventResult | None]
    coverage: CoverageSource


async def commit(database: Database, batch: Batch) -> None:
    """Store the batch's new events and fill in its results, once committed."""
    if database.dialect != "sqlite":
        await _commit_group(database, [batch])
        return
    await _group_committer(database).submit(object(), batch)


_committers: weakref.WeakKeyDictionary[Database, Coalescer[object, Batch, None]] = weakref.WeakKeyDictionary()


def _group_committer(database: Database) -> Coalescer[object, Batch, None]:
    found = _committers.get(database)
    if found is None:

        async def run(group: dict[object, Batch]) -> dict[object, Exception | None]:
            return await _commit_together(database, group)

        found = _committers[database] = Coalescer(run, max_batch=BATCHES_PER_GROUP, name="usage_batches")
    return found


async def _commit_together(database: Database, group: dict[object, Batch]) -> dict[object, Exception | None]:
    # Errors are not swallowed here: each goes back to its request, which raises it.
    try:
        await _commit_group(database, list(group.values()))
        return dict.fromkeys(group)
    except Exception as exc:  # noqa: BLE001
        if len(group) == 1:
            return dict.fromkeys(group, exc)
        log.warning("usage_group_commit_failed", batches=len(group), error_type=type(exc).__name__)
    answers: dict[object, Exception | None] = {}
    for key, batch in group.items():
        try:
            await _commit_group(database, [batch])
            answers[key] = None
        except Exception as exc:  # noqa: BLE001
            answers[key] = exc
    return answers


async def _commit_group(database: Database, group: list[Batch]) -> None:
    late: dict[CoverageSource, set[str]] = defaultdict(set)
    opened: list[group_cap.GroupRef] = []
    apart = await _admit_apart(database, group) if database.dialect == "postgresql" else None
    async with database.transaction() as session:
        for tenant_id, owned in _by_tenant(group):
            batches = list(owned)  # sorted() is stable: arrival order within a tenant
            candidates = [(c, b) for b in batches for c in b.candidates]
            if apart is None:
                admission = await group_cap.admit(session, tenant_id, candidates)
            else:
                admission = apart.get(tenant_id) or group_cap.Admission(candidates)
            _reject_over_cap(admission.rejected)
            candidates = admission.admitted
            rows = _first_of_each_id([c for c, _ in candidates])
            stored = await event_store.store(session, tenant_id, rows, max(b.now for b in batches))
            if apart is None:
                opened += await group_cap.record(session, admission.opening, stored)
            await _classify(session, tenant_id, candidates, stored)
            for c, b in candidates:
                if c.row.event_id in stored and c.subscription.is_late(c.row.timestamp, b.now):
                    late[b.coverage].add(c.subscription.subscription_id)
        for coverage, subscription_ids in late.items():
            await coverage.flag_late_usage(session, subscription_ids, max(b.now for b in group))
    group_cap.remember(opened)


def _by_tenant(group: list[Batch]) -> Iterator[tuple[str, Iterator[Batch]]]:
    return itertools.groupby(sorted(group, key=lambda b: b.tenant_id), lambda b: b.tenant_id)


async def _admit_apart(database: Database, group: list[Batch]) -> dict[str, group_cap.Admission]:
    """PostgreSQL: the groups a batch opens are decided and recorded in a short transaction of
    their own, so that the locks that keep the cap exact are held for a few statements, not for
    the batch's whole write (concurrent batches share customers). Should the write then fail, its
    new groups stay recorded: counted, without usage, until events of theirs come."""
    pending = {
        tenant_id: [(c, b) for b in owned for c in b.candidates] for tenant_id, owned in _by_tenant(group)
    }
    pending = {t: candidates for t, candidates in pending.items() if not group_cap.all_known(t, candidates)}
    if not pending:
        return {}
    admissions = {}
    async with database.transaction() as session:
        # No wait for this commit's flush: the write that follows waits for its own, which
        # covers this one (the log is flushed in order); a crash before then loses only groups
        # that no committed event is in.
        await session.execute(sa.text("SET LOCAL synchronous_commit = off"))
        for tenant_id, candidates in pending.items():
            admissions[tenant_id] = admission = await group_cap.admit(session, tenant_id, candidates)
            await group_cap.record(session, admission.opening)
    group_cap.remember(ref for admission in admissions.values() for ref in admission.opening)
    return admissions


def _reject_over_cap(rejected: list[tuple[Candidate, Batch]]) -> None:
    message = (
        f"the customer already has {group_cap.MAX_GROUPS} groups of this meter's group_by in the"
        " subscription period; events of those groups are still accepted"
    )
    for c, batch in rejected:
        batch.results[c.index] = EventResult(c.index, c.row.event_id, "rejected", "too_many_groups", message)


def _first_of_each_id(candidates: list[Candidate]) -> list[NewEvent]:
    """The rows to insert, sorted by id; a repeat of an id is classified against the first one."""
    first: dict[str, NewEvent] = {}
    for candidate in candidates:
        first.setdefault(candidate.row.event_id, candidate.row)
    return [first[event_id] for event_id in sorted(first)]


async def _classify(
    session: AsyncSession,
    tenant_id: str,
    candidates: Sequence[tuple[Candidate, Batch]],
    stored: dict[str, int],
) -> None:
    """Accepted for the first event of each new id; duplicate or conflict, by payload hash, for
    the rest (a repeat of an id stored by this transaction is compared with its first)."""
    hashes: dict[str, str] = {}
    others = {c.row.event_id for c, _ in candidates} - stored.keys()
    if others:
        table = UsageEvent.__table__
        query = sa.select(table.c.event_id, table.c.payload_hash).where(
            table.c.tenant_id == tenant_id,
            any_of(table.c.event_id, sorted(others), session.get_bind().dialect.name),
        )
        hashes = {row.event_id: row.payload_hash for row in await session.execute(query)}
    for c, batch in candidates:
        event_id = c.row.event_id
        if event_id in stored and event_id not in hashes:
            hashes[event_id] = c.row.payload_hash  # the first of its id, the one stored
            result = EventResult(c.index, event_id, "accepted")
        elif hashes.get(event_id) == c.row.payload_hash:
            result = EventResult(c.index, event_id, "duplicate")
        else:
            message = "an event with this id was accepted with a different payload; nothing changed"
            result = EventResult(c.index, event_id, "conflict", "conflict", message)
        batch.results[c.index] = result
