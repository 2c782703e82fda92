"""Delivering queued notifications: claim due rows, send each once, record the outcome.

Several dispatchers (replicas, the scheduler and ``POST /v1/billing/run``) may run at once:
:func:`billing.core.work.claim` leases each row to one of them, and the outcome is written only
under that lease. A dispatcher stops starting sends well before its lease could run out
(``SEND_BUDGET`` plus one SMTP timeout is far below ``LEASE``), so no other one can claim a row
that is being sent. A failed send is tried again :func:`retry_delay` later, ``MAX_ATTEMPTS`` tries
in all (how retries work is in :mod:`billing.core.work`).

The one window for a duplicate: the SMTP server accepted an email and the process died before
its ``sent`` status committed. An outcome commits right after its send (the outcomes of the
lanes that finish together share one transaction), and a lane starts its next send only once
its last outcome is committed: the window is at most one email per connection (``LANES``) and
a few milliseconds wide. The copy carries the same Message-ID, so receivers can drop it, and
``.eml`` delivery rewrites the same file.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import Counter

from billing.core import work
from billing.core.backoff import backoff
from billing.core.context import AppContext
from billing.core.db.queries import rowcount
from billing.notifications.delivery import DeliveryError, Transport, build_email, open_transport
from billing.notifications.models import FAILED, QUEUED, SENT, Notification

BATCH = 200
# Concurrent SMTP connections per dispatcher, each sending its share of a batch in order: sending
# is bound by round trips, not CPU (8 lanes deliver about twice as many emails/s as 4).
LANES = 8
MAX_ATTEMPTS = 10
LEASE = timedelta(minutes=5)
SEND_BUDGET_SECONDS = 120.0
TABLE = Notification.__table__
OUTCOME_COLUMNS = ("status", "attempts", "last_error", "next_attempt_at", "sent_at")
log = structlog.get_logger("billing.notifications")
DELIVERIES = Counter("billing_notifications_total", "Notification send attempts by outcome", ["outcome"])


def retry_delay(attempts: int) -> timedelta:
    """One minute after the first failure, doubling, at most an hour apart (about 4 h in all)."""
    return backoff(attempts, first=timedelta(minutes=1), cap=timedelta(hours=1))


async def dispatch_notifications(ctx: AppContext, *, at: datetime | None = None) -> int:
    """Send every notification that is queued and due; return how many were sent.

    ``at`` (the billing run's time, which may be ahead of the clock when time travel is on) is
    the time the work is done at: what it makes due is sent, and outcomes are stamped with it.
    """
    now = ctx.clock.now() if at is None else max(at, ctx.clock.now())
    # One connection per lane for the whole call, opened on first use.
    transports = [open_transport(ctx.settings) for _ in range(LANES)]
    sent = 0

    async def batch() -> int:
        nonlocal sent
        claimed, delivered = await _dispatch_batch(ctx, now, transports)
        sent += delivered
        return claimed

    try:
        await work.drain(batch, full=BATCH)
    finally:
        for transport in transports:
            await transport.close()
    return sent


async def _dispatch_batch(ctx: AppContext, now: datetime, transports: list[Transport]) -> tuple[int, int]:
    token, rows = await work.claim(
        ctx,
        TABLE,
        due=sa.and_(TABLE.c.status == QUEUED, TABLE.c.next_attempt_at <= now),
        order_by=[TABLE.c.next_attempt_at, TABLE.c.id],
        limit=BATCH,
        lease=LEASE,
        now=now,
    )
    deadline = time.monotonic() + SEND_BUDGET_SECONDS
    outcomes = _Outcomes(ctx, token)
    lanes = [(rows[n :: len(transports)], transport) for n, transport in enumerate(transports)]
    sent = await asyncio.gather(
        *[_send_lane(now, share, transport, outcomes, deadline) for share, transport in lanes if share]
    )
    return len(rows), sum(sent)


async def _send_lane(
    now: datetime, rows: list[sa.Row[Any]], transport: Transport, outcomes: _Outcomes, deadline: float
) -> int:
    sent = 0
    for row in rows:
        if time.monotonic() > deadline:
            await outcomes.record(row, _unchanged(row))  # released: a later run sends it
            continue
        sent += await _send_one(now, transport, row, outcomes)
    return sent


async def _send_one(now: datetime, transport: Transport, row: sa.Row[Any], outcomes: _Outcomes) -> int:
    attempts = row.attempts + 1
    try:
        await transport.send(build_email(row))
    except DeliveryError as exc:
        outcome = _failure(now, attempts, exc)
        DELIVERIES.labels("failed" if outcome["status"] == FAILED else "retry").inc()
        log.warning(
            "notification_send_failed",
            notification_id=row.id,
            kind=row.kind,
            attempts=attempts,
            error=str(exc),
        )
        await outcomes.record(row, outcome)
        return 0
    DELIVERIES.labels("sent").inc()
    await outcomes.record(
        row,
        {"status": SENT, "attempts": attempts, "last_error": None, "next_attempt_at": None, "sent_at": now},
    )
    return 1


def _failure(now: datetime, attempts: int, exc: DeliveryError) -> dict[str, Any]:
    outcome: dict[str, Any] = {"attempts": attempts, "last_error": str(exc)[:2000], "sent_at": None}
    if exc.permanent or attempts >= MAX_ATTEMPTS:
        return {**outcome, "status": FAILED, "next_attempt_at": None}
    return {**outcome, "status": QUEUED, "next_attempt_at": now + retry_delay(attempts)}


def _unchanged(row: sa.Row[Any]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in OUTCOME_COLUMNS}


# The outcome of claimed work, written only while the claim is ours (and releasing it).
_OUTCOME = (
    sa.update(TABLE)
    .where(TABLE.c.id == sa.bindparam("b_id"), TABLE.c.claimed_by == sa.bindparam("b_token"))
    .values(
        claimed_by=None,
        claim_expires_at=None,
        **{name: sa.bindparam(f"b_{name}") for name in OUTCOME_COLUMNS},
    )
)


class _Outcomes:
    """The outcomes of one claim, committed in groups.

    A lane hands over its outcome and waits until it is committed before it sends its next
    email (so at most one email per lane is ever sent and not yet recorded); whichever lane
    gets to write writes every outcome waiting at that moment, in one transaction.
    """

    def __init__(self, ctx: AppContext, token: str) -> None:
        self.ctx, self.token = ctx, token
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._lock = asyncio.Lock()

    async def record(self, row: sa.Row[Any], values: dict[str, Any]) -> None:
        params = {"b_id": row.id, "b_token": self.token, **{f"b_{k}": v for k, v in values.items()}}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((params, done))
        async with self._lock:
            if not done.done():
                await self._write_waiting()
        await done

    async def _write_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            async with self.ctx.database.transaction() as session:
                result = await session.execute(_OUTCOME, [params for params, _ in batch])
        except Exception as exc:  # noqa: BLE001 (each waiting lane raises it)
            for _, done in batch:
                done.set_exception(exc)
            return
        for _, done in batch:
            done.set_result(None)
        written = rowcount(result)
        if 0 <= written < len(batch):
            log.warning("notification_claims_lost", lost=len(batch) - written)
