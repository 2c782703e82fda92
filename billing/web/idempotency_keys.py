"""The ``idempotency_keys`` table: one row per (scope, key), claimed before a request runs.

The row is the lock: the request that inserts it runs, any other with the same key finds it (on
any replica) and is answered from it. Every step is a short transaction of its own, never one
that spans the request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.context import AppContext
from billing.core.db.inserts import insert_ignore
from billing.core.db.queries import rowcount
from billing.core.db.types import Base, JSONType, UTCDateTime, one_of

KEPT_FOR = timedelta(hours=24)
# An in-progress row this old belongs to a request whose process died before it stored its
# answer: the same request may then take the key over. Longer than any request runs.
ABANDONED_AFTER = timedelta(minutes=10)
IN_PROGRESS, DONE = "in_progress", "done"
PURGE_BATCH = 1000


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.CheckConstraint(one_of("state", (IN_PROGRESS, DONE)), name="state"),)

    # Whose key: a tenant id (a platform key id for the platform API).
    scope: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    method: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.Text())
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16))
    owner: Mapped[str] = mapped_column(sa.String(32))  # the claim's token: who may store the answer
    response_status: Mapped[int | None] = mapped_column(sa.Integer())
    response_headers: Mapped[list[list[str]] | None] = mapped_column(JSONType)
    response_body: Mapped[bytes | None] = mapped_column(sa.LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


@dataclass(frozen=True)
class Fingerprint:
    """What makes two requests the same request."""

    method: str
    path: str
    request_hash: str


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Claimed:
    owner: str


@dataclass(frozen=True)
class Replay:
    response: StoredResponse


@dataclass(frozen=True)
class Reused:
    pass


@dataclass(frozen=True)
class InUse:
    pass


Outcome = Claimed | Replay | Reused | InUse
_TABLE = IdempotencyKey.__table__
_ATTEMPTS = 3  # a row deleted between our insert and our read: look again


async def claim(ctx: AppContext, scope: str, key: str, fingerprint: Fingerprint) -> Outcome:
    """Take the key for this request, or say what the request that holds it answers."""
    for _ in range(_ATTEMPTS):
        async with ctx.database.transaction() as session:
            outcome = await _claim(session, scope, key, fingerprint, ctx.clock.now())
        if outcome is not None:
            return outcome
    return InUse()


async def _claim(
    session: AsyncSession, scope: str, key: str, fingerprint: Fingerprint, now: datetime
) -> Outcome | None:
    owner = secrets.token_hex(16)
    fresh = _fresh_row(scope, key, fingerprint, owner, now)
    if await insert_ignore(session, _TABLE, [fresh], returning=[_TABLE.c.owner]):
        return Claimed(owner)
    found = (await session.execute(sa.select(_TABLE).where(*_is(scope, key)).with_for_update())).one_or_none()
    if found is None:
        return None
    same = Fingerprint(found.method, found.path, found.request_hash) == fingerprint
    expired = found.expires_at <= now
    abandoned = found.state == IN_PROGRESS and found.created_at <= now - ABANDONED_AFTER
    if expired or (same and abandoned):
        await session.execute(sa.update(_TABLE).where(*_is(scope, key)).values(fresh))
        return Claimed(owner)
    if not same:
        return Reused()
    if found.state == IN_PROGRESS:
        return InUse()
    headers = [(name, value) for name, value in found.response_headers or []]
    return Replay(StoredResponse(found.response_status, headers, found.response_body or b""))


def _fresh_row(scope: str, key: str, fingerprint: Fingerprint, owner: str, now: datetime) -> dict[str, Any]:
    return {
        "scope": scope,
        "key": key,
        "method": fingerprint.method,
        "path": fingerprint.path,
        "request_hash": fingerprint.request_hash,
        "state": IN_PROGRESS,
        "owner": owner,
        "response_status": None,
        "response_headers": None,
        "response_body": None,
        "created_at": now,
        "expires_at": now + KEPT_FOR,
    }


async def store(ctx: AppContext, scope: str, key: str, owner: str, response: StoredResponse) -> None:
    """Keep the answer of the request that holds the key, for its replays."""
    async with ctx.database.transaction() as session:
        await session.execute(
            sa.update(_TABLE)
            .where(*_is(scope, key), _TABLE.c.owner == owner)
            .values(
                state=DONE,
                response_status=response.status,
                response_headers=[list(header) for header in response.headers],
                response_body=response.body,
            )
        )


async def release(ctx: AppContext, scope: str, key: str, owner: str) -> None:
    """Give the key up, so that it stays usable (the request answered something not kept)."""
    async with ctx.database.transaction() as session:
        await session.execute(sa.delete(_TABLE).where(*_is(scope, key), _TABLE.c.owner == owner))


async def purge_expired(ctx: AppContext, *, at: datetime, scope: str | None = None) -> int:
    """Delete the keys expired by ``at`` (of one scope, or all), in batches; how many."""
    purged = 0
    while True:
        async with ctx.database.transaction() as session:
            batch = sa.select(_TABLE.c.scope, _TABLE.c.key).where(_TABLE.c.expires_at <= at)
            if scope is not None:
                batch = batch.where(_TABLE.c.scope == scope)
            pairs = sa.tuple_(_TABLE.c.scope, _TABLE.c.key).in_(batch.limit(PURGE_BATCH))
            deleted = rowcount(await session.execute(sa.delete(_TABLE).where(pairs)))
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged


def _is(scope: str, key: str) -> tuple[sa.ColumnElement[bool], ...]:
    return _TABLE.c.scope == scope, _TABLE.c.key == key
