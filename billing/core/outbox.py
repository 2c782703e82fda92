"""The outbox: domain events written in the same transaction as the change that caused them.

An event is written once, by whoever causes it, knowing nothing of who listens. Dispatching
fans it out into one row per consumer of its topic (webhooks, dunning, notifications...), from
the list of consumers the composition root (``billing.jobs``) passes in, so that every consumer
retries on its own and every process fans out to the same consumers. Each consumer's due rows
are then claimed, handled and their outcome fenced on the claim (:mod:`billing.core.work`, which
also says how retries work): delivery is at least once, so handlers must be idempotent (they are
keyed on the event id). A handler that raises is tried again after :func:`retry_delay`, up to
``MAX_ATTEMPTS`` tries in all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.backoff import backoff
from billing.core.context import AppContext
from billing.core.db.claims import ClaimMixin
from billing.core.db.inserts import insert_ignore, insert_rows
from billing.core.db.types import Base, JSONType, UTCDateTime
from billing.core.ids import new_id
from billing.core.work import claim_and_handle, drain, finish

MAX_ATTEMPTS = 12
CLAIM_BATCH = 100
LEASE = timedelta(minutes=2)
log = structlog.get_logger("billing.core.outbox")
OUTBOX_RESULTS = Counter("billing_outbox_handled_total", "Outbox rows handled", ["consumer", "outcome"])


class OutboxEvent(Base, ClaimMixin):
    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(40))
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    consumer: Mapped[str] = mapped_column(sa.String(32))
    topic: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("event_id", "consumer"),
        sa.Index("ix_outbox_due", "consumer", "processed_at", "failed_at", "available_at"),
    )


@dataclass(frozen=True)
class Message:
    event_id: str
    tenant_id: str
    topic: str
    payload: Mapping[str, Any]
    created_at: datetime
    attempt: int


Handler = Callable[[AppContext, Message], Awaitable[None]]


@dataclass(frozen=True)
class Consumer:
    name: str
    topics: frozenset[str]
    handle: Handler


# The consumer of an event's own row, until dispatching fans it out to the real consumers.
FAN_OUT = "*"


def subscribed(consumer: Consumer, topic: str) -> bool:
    return topic in consumer.topics or "*" in consumer.topics


async def emit(
    session: AsyncSession, *, tenant_id: str, topic: str, payload: Mapping[str, Any], now: datetime
) -> str:
    """Record ``topic`` inside the caller's transaction; return the event id."""
    (event_id,) = await emit_many(session, [(tenant_id, topic, payload)], now=now)
    return event_id


async def emit_many(
    session: AsyncSession, events: Sequence[tuple[str, str, Mapping[str, Any]]], *, now: datetime
) -> list[str]:
    """Record many (tenant id, topic, payload) events with one insert; return their event ids."""
    event_ids = [new_id("evt") for _ in events]
    # Fanned out in id order: ids made within one millisecond are random, so hand them out
    # sorted, and the events keep the order they are given in.
    row_ids = sorted(new_id("obx") for _ in events)
    rows = [
        {
            "id": row_id,
            "event_id": event_id,
            "tenant_id": tenant_id,
            "consumer": FAN_OUT,
            "topic": topic,
            "payload": dict(payload),
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        }
        for row_id, event_id, (tenant_id, topic, payload) in zip(row_ids, event_ids, events, strict=True)
    ]
    await insert_rows(session, OutboxEvent.__table__, rows)
    return event_ids


def retry_delay(attempts: int) -> timedelta:
    """10 s after the first failure, doubling, at most an hour apart."""
    return backoff(attempts, first=timedelta(seconds=10), cap=timedelta(hours=1))


async def dispatch(
    ctx: AppContext, consumer: Consumer, *, limit: int = CLAIM_BATCH, at: datetime | None = None
) -> int:
    """Claim and handle one batch of rows due by ``at`` (default now) for ``consumer``; return how
    many were handled. A billing run at a future ``at`` passes it, so that what it emitted is due."""
    table = OutboxEvent.__table__
    now = max(at, ctx.clock.now()) if at is not None else ctx.clock.now()
    due = sa.and_(
        table.c.consumer == consumer.name,
        table.c.processed_at.is_(None),
        table.c.failed_at.is_(None),
        table.c.available_at <= now,
    )
    return await claim_and_handle(
        ctx,
        table,
        due=due,
        order_by=[table.c.available_at, table.c.id],
        limit=limit,
        lease=LEASE,
        now=now,
        handle=partial(_handle_row, ctx, consumer, now),
    )


async def _handle_row(
    ctx: AppContext, consumer: Consumer, now: datetime, row: sa.Row[Any], token: str
) -> None:
    message = Message(row.event_id, row.tenant_id, row.topic, row.payload, row.created_at, row.attempts + 1)
    outcome: dict[str, Any]
    try:
        await consumer.handle(ctx, message)
    except Exception as exc:
        log.warning("outbox_handler_failed", consumer=consumer.name, event_id=row.event_id, exc_info=exc)
        outcome = _failure(now, message.attempt, f"{type(exc).__name__}: {exc}")
        OUTBOX_RESULTS.labels(consumer.name, "failed" if "failed_at" in outcome else "retry").inc()
    else:
        outcome = {"processed_at": now, "attempts": message.attempt, "last_error": None}
        OUTBOX_RESULTS.labels(consumer.name, "processed").inc()
    async with ctx.database.transaction() as session:
        await finish(session, OutboxEvent.__table__, row.id, token, **outcome)


def _failure(now: datetime, attempt: int, error: str) -> dict[str, Any]:
    outcome: dict[str, Any] = {"attempts": attempt, "last_error": error[:2000]}
    if attempt >= MAX_ATTEMPTS:
        outcome["failed_at"] = now
    else:
        outcome["available_at"] = now + retry_delay(attempt)
    return outcome


async def fan_out(ctx: AppContext, consumers: Sequence[Consumer], *, at: datetime | None = None) -> int:
    """Copy every event not yet fanned out into one row per consumer of its topic; return how many
    events. Copies are insert-ignore on (event id, consumer), so one made twice is made once."""
    now = max(at, ctx.clock.now()) if at is not None else ctx.clock.now()
    return await drain(partial(_fan_out_batch, ctx, consumers, now), full=CLAIM_BATCH)


async def _fan_out_batch(ctx: AppContext, consumers: Sequence[Consumer], now: datetime) -> int:
    table = OutboxEvent.__table__
    async with ctx.database.transaction() as session:
        query = (
            sa.select(table)
            .where(table.c.consumer == FAN_OUT, table.c.processed_at.is_(None))
            .order_by(table.c.available_at, table.c.id)
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True)
        )
        rows = (await session.execute(query)).all()
        copies = [
            {**row._asdict(), "consumer": consumer.name}
            for row in rows
            for consumer in consumers
            if subscribed(consumer, row.topic)
        ]
        # Consumers handle rows in id order: ids made within one millisecond are random, so hand
        # them out sorted, and the copies keep the order of the events.
        for copy, copy_id in zip(copies, sorted(new_id("obx") for _ in copies), strict=True):
            copy["id"] = copy_id
        await insert_ignore(session, table, copies)
        if rows:
            await session.execute(
                sa.update(table).where(table.c.id.in_([row.id for row in rows])).values(processed_at=now),
                execution_options={"synchronize_session": False},
            )
    return len(rows)


# Events caused by handling events, caused by handling events: a chain is never longer than this.
MAX_ROUNDS = 4


async def dispatch_all(ctx: AppContext, consumers: Sequence[Consumer], *, at: datetime | None = None) -> int:
    """Fan out, then handle everything due by ``at`` (default now), consumer by consumer; return
    how many rows were handled. A handler may emit events of its own (dunning's case opening
    makes a subscription past due), so rounds repeat while the last one handled anything."""
    handled = 0
    for _ in range(MAX_ROUNDS):
        await fan_out(ctx, consumers, at=at)
        this_round = 0
        for consumer in consumers:
            this_round += await drain(partial(dispatch, ctx, consumer, at=at), full=CLAIM_BATCH)
        handled += this_round
        if not this_round:
            break
    return handled
