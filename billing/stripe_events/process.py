"""Processing stored Stripe events: a tick claims due rows, runs their handler, retries with backoff
(:func:`retry_delay`; how retries work is in :mod:`billing.core.work`).

The handler's effects and the row's outcome commit in one transaction, fenced by the claim: if
the lease was lost meanwhile, the whole transaction rolls back and the new holder does the work.
After the last attempt the event is ``failed`` with its error, until someone reprocesses it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

import msgspec
import sqlalchemy as sa
import structlog

from billing.core import work
from billing.core.backoff import backoff
from billing.core.context import AppContext
from billing.stripe_events.handlers import HANDLERS, StoredEvent, Unprocessable
from billing.stripe_events.metrics import LAG
from billing.stripe_events.metrics import PROCESSED as PROCESSED_TOTAL
from billing.stripe_events.models import FAILED, RECEIVED, SKIPPED, StripeEvent

MAX_ATTEMPTS = 10
CLAIM_BATCH = 50
LEASE = timedelta(minutes=2)
log = structlog.get_logger("billing.stripe_events")
TABLE = StripeEvent.__table__


class _Data(msgspec.Struct):
    object: msgspec.Raw
    previous_attributes: dict[str, Any] | None = None


class _Body(msgspec.Struct):
    data: _Data


def retry_delay(attempts: int) -> timedelta:
    """30 s after the first failure, doubling, at most an hour apart (about 3.5 h for all tries)."""
    return backoff(attempts, first=timedelta(seconds=30), cap=timedelta(hours=1))


def _stored(row: sa.Row[Any]) -> StoredEvent:
    try:
        body = msgspec.json.decode(row.payload, type=_Body)
    except msgspec.DecodeError as exc:
        raise Unprocessable(f"stored payload is not an event: {exc}") from exc
    return StoredEvent(
        row.id,
        row.tenant_id,
        row.stripe_event_id,
        row.type,
        bytes(body.data.object),
        body.data.previous_attributes,
    )


async def claim_due(ctx: AppContext, *, limit: int = CLAIM_BATCH, only: str | None = None) -> work.Claim:
    """Lease up to ``limit`` due events (or only the event ``only``), oldest Stripe event first."""
    now = ctx.clock.now()
    due = sa.and_(TABLE.c.status == RECEIVED, TABLE.c.next_attempt_at <= now)
    if only is not None:
        due = sa.and_(due, TABLE.c.id == only)
    return await work.claim(
        ctx,
        TABLE,
        due=due,
        order_by=[TABLE.c.next_attempt_at, TABLE.c.id],
        limit=limit,
        lease=LEASE,
        now=now,
        handle_order=[TABLE.c.created_at, TABLE.c.id],
    )


async def process_due(ctx: AppContext, *, limit: int = CLAIM_BATCH, only: str | None = None) -> int:
    """Claim and handle one batch of due events, oldest Stripe event first; return how many."""
    return await work.handle_each(await claim_due(ctx, limit=limit, only=only), partial(_process, ctx))


async def process_row(ctx: AppContext, row: sa.Row[Any], token: str) -> None:
    """Handle one claimed event; if its claim was lost meanwhile, nothing commits."""
    await work.handle_row(partial(_process, ctx), row, token)


async def _process(ctx: AppContext, row: sa.Row[Any], token: str) -> None:
    attempt = row.attempts + 1
    handler = HANDLERS.get(row.type)
    try:
        async with ctx.database.transaction() as session:
            now = ctx.clock.now()
            if handler is None:  # stored while a tenant had opted in to a type we no longer know
                outcome = SKIPPED
            else:
                outcome = await handler(session, _stored(row), now)
            done = {"status": outcome, "attempts": attempt, "last_error": None, "handled_at": now}
            await work.finish(session, TABLE, row.id, token, **done)
    except work.ClaimLost:
        raise
    except Unprocessable as exc:
        await _record_failure(ctx, row, token, attempt, str(exc), final=True)
        return
    except Exception as exc:
        log.warning("stripe_event_handler_failed", stripe_event_id=row.stripe_event_id, exc_info=exc)
        await _record_failure(ctx, row, token, attempt, f"{type(exc).__name__}: {exc}", final=False)
        return
    PROCESSED_TOTAL.labels(row.type, outcome).inc()
    LAG.observe(_seconds_since(row.received_at, now))


async def _record_failure(
    ctx: AppContext, row: sa.Row[Any], token: str, attempt: int, error: str, *, final: bool
) -> None:
    now = ctx.clock.now()
    values: dict[str, Any] = {"attempts": attempt, "last_error": error[:2000]}
    if final or attempt >= MAX_ATTEMPTS:
        values |= {"status": FAILED, "handled_at": now}
        outcome = "failed"
    else:
        values["next_attempt_at"] = now + retry_delay(attempt)
        outcome = "retry"
    async with ctx.database.transaction() as session:
        await work.finish(session, TABLE, row.id, token, **values)
    PROCESSED_TOTAL.labels(row.type, outcome).inc()
    if outcome == "failed":
        log.error("stripe_event_failed", stripe_event_id=row.stripe_event_id, type=row.type, attempts=attempt)
        LAG.observe(_seconds_since(row.received_at, now))


def _seconds_since(then: datetime, now: datetime) -> float:
    return max((now - then).total_seconds(), 0.0)


async def process_all(ctx: AppContext) -> int:
    """Process every stored event that is due; return how many were handled."""
    return await work.drain(partial(process_due, ctx), full=CLAIM_BATCH)
