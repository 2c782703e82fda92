"""The delivery dispatcher: a tick claims due deliveries, signs and POSTs them, records each attempt.

At least once: the claim is a lease, and the outcome is written only while the lease is held. A
process that dies between sending and writing leaves the delivery claimed until the lease runs
out; then another dispatcher sends it again, with the same body and ``webhook-id``. A 2xx answer
within the timeout delivers; anything else is retried (see :mod:`billing.webhooks.backoff`) until
three days after the event. An endpoint whose attempts have failed for three days is disabled.
Claims, fencing and how retries work are :mod:`billing.core.work`'s.

``at`` is the business time (``POST /v1/billing/run`` may travel in time); leases follow the clock,
and ``webhook-timestamp`` is the wall clock, which is what receivers check it against.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox, work
from billing.core.clock import monotonic_ns, wall_time_ns
from billing.core.context import AppContext
from billing.core.crypto import SecretDecryptionError
from billing.webhooks import backoff, metrics, signing
from billing.webhooks.endpoints import set_enabled, signing_secrets
from billing.webhooks.events import ENDPOINT_DISABLED
from billing.webhooks.models import (
    DELIVERED,
    FAILED,
    PENDING,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.webhooks.targets import DestinationRefused, refuse_private_destination

TIMEOUT_SECONDS = 10.0
CLAIM_BATCH = 20
CONCURRENCY = 10
# One slow endpoint may hold at most this many deliveries in flight, so it cannot take every slot.
PER_ENDPOINT_CONCURRENCY = 4
# Long enough for a whole batch: CLAIM_BATCH / CONCURRENCY rounds of at most TIMEOUT_SECONDS each.
LEASE = timedelta(minutes=2)
DISABLE_AFTER = timedelta(days=3)
USER_AGENT = "billing-webhooks/1.0"
MAX_ERROR = 500
TABLE = WebhookDelivery.__table__
log = structlog.get_logger("billing.webhooks")


@dataclass(frozen=True)
class Target:
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    attempted_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


async def deliver_due(
    ctx: AppContext,
    *,
    at: datetime | None = None,
    tenant_id: str | None = None,
    only: str | None = None,
    limit: int = CLAIM_BATCH,
) -> int:
    """Claim and attempt one batch of deliveries due by ``at`` (default now); return how many."""
    claimed = await _claim(ctx, at or ctx.clock.now(), tenant_id, only, limit)
    if not claimed.rows:
        return 0
    targets = await _targets(ctx, {row.endpoint_id for row in claimed.rows}, at or ctx.clock.now())
    async with _client() as client:

        async def one(row: sa.Row[Any], token: str) -> None:
            if row.endpoint_id in targets:  # else deleted since the claim, and its deliveries with it
                await _deliver(ctx, client, row, targets[row.endpoint_id], token, at)

        return await work.handle_each(claimed, one, concurrency=CONCURRENCY, on_error=_unrecorded)


async def deliver_all(ctx: AppContext, *, at: datetime | None = None, tenant_id: str | None = None) -> int:
    """Everything due by ``at``; what fails now waits at least 10 s, so this loop ends.

    A batch may be short of CLAIM_BATCH while more is due (the per-endpoint cap), so only an
    empty claim ends it."""
    return await work.drain(partial(deliver_due, ctx, at=at, tenant_id=tenant_id))


def _client() -> httpx.AsyncClient:
    # No proxies from the environment: the destination checks must hold for the real connection.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(TIMEOUT_SECONDS),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT, "content-type": "application/json"},
    )


async def _claim(
    ctx: AppContext, at: datetime, tenant_id: str | None, only: str | None, limit: int
) -> work.Claim:
    enabled = sa.select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True))
    due = sa.and_(TABLE.c.status == PENDING, TABLE.c.next_attempt_at <= at, TABLE.c.endpoint_id.in_(enabled))
    if tenant_id is not None:
        due = sa.and_(due, TABLE.c.tenant_id == tenant_id)
    if only is not None:
        due = sa.and_(due, TABLE.c.id == only)
    now = ctx.clock.now()
    return await work.claim(
        ctx,
        TABLE,
        due=sa.and_(due, _within_endpoint_cap(due, now)),
        order_by=[TABLE.c.next_attempt_at, TABLE.c.id],
        limit=limit,
        lease=LEASE,
        now=now,
    )


def _within_endpoint_cap(due: sa.ColumnElement[bool], now: datetime) -> sa.ColumnElement[bool]:
    """Each endpoint's earliest due rows, no more than PER_ENDPOINT_CONCURRENCY less those it has in
    flight under live claims (other batches, manual retries, other replicas). Two claims racing on
    PostgreSQL may each see the other's rows as not yet in flight: the cap then holds per claim."""
    free = sa.or_(TABLE.c.claim_expires_at.is_(None), TABLE.c.claim_expires_at <= now)
    rank = sa.func.row_number().over(
        partition_by=TABLE.c.endpoint_id, order_by=[TABLE.c.next_attempt_at, TABLE.c.id]
    )
    ranked = sa.select(TABLE.c.id, TABLE.c.endpoint_id, rank.label("rank")).where(due, free).subquery()
    flying = TABLE.alias("in_flight")
    in_flight = (
        sa.select(sa.func.count())
        .where(flying.c.endpoint_id == ranked.c.endpoint_id, flying.c.claim_expires_at > now)
        .scalar_subquery()
    )
    allowed = sa.select(ranked.c.id).where(ranked.c.rank + in_flight <= PER_ENDPOINT_CONCURRENCY)
    return TABLE.c.id.in_(allowed)


async def _targets(ctx: AppContext, endpoint_ids: set[str], at: datetime) -> dict[str, Target | None]:
    """Each endpoint's URL and signing secrets; None for one whose secret cannot be decrypted."""
    async with ctx.database.read() as session:
        endpoints = await session.scalars(
            sa.select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids))
        )
        found: dict[str, Target | None] = {}
        for endpoint in endpoints:
            try:
                found[endpoint.id] = Target(
                    endpoint.url, tuple(signing_secrets(endpoint, box=ctx.box, at=at))
                )
            except SecretDecryptionError:
                log.error("webhook_secret_undecryptable", endpoint=endpoint.id)
                found[endpoint.id] = None
    return found


async def _deliver(
    ctx: AppContext,
    client: httpx.AsyncClient,
    row: sa.Row[Any],
    target: Target | None,
    token: str,
    at: datetime | None,
) -> None:
    attempted_at = at or ctx.clock.now()
    if target is None:
        outcome = Outcome(attempted_at, 0, error="the endpoint's signing secret cannot be decrypted")
    else:
        outcome = await send(client, target, row.event_id, row.body, attempted_at, ctx.settings.production)
    _count(row, outcome, await _record(ctx, row, token, outcome))


def _unrecorded(row: sa.Row[Any]) -> None:
    # The lease still holds the row: another dispatcher sends it again once it runs out.
    log.exception("webhook_record_failed", delivery=row.id)


async def send(
    client: httpx.AsyncClient,
    target: Target,
    msg_id: str,
    body: str,
    attempted_at: datetime,
    production: bool,
) -> Outcome:
    """POST ``body`` signed for ``target``; never raises for what the network or the receiver does."""
    started = monotonic_ns()
    headers = signing.headers(target.secrets, msg_id, wall_time_ns() // 1_000_000_000, body)
    status_code: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            if production:
                await refuse_private_destination(target.url)
            request = client.build_request("POST", target.url, content=body.encode(), headers=headers)
            response = await client.send(request, stream=True)  # the answer's body is never read
            await response.aclose()
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except (TimeoutError, httpx.TimeoutException):
        error = f"timed out after {TIMEOUT_SECONDS:g} s"
    except DestinationRefused as exc:
        error = f"destination refused: {exc}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = (monotonic_ns() - started) // 1_000_000
    return Outcome(attempted_at, duration_ms, status_code, error[:MAX_ERROR] if error else None)


async def _record(ctx: AppContext, row: sa.Row[Any], token: str, outcome: Outcome) -> str | None:
    """Write the attempt and the delivery's new state under our claim; return the final status, if any."""
    number = row.attempt_count + 1
    values, final = _next_state(row, number, outcome)
    async with ctx.database.transaction() as session:
        await work.finish(session, TABLE, row.id, token, **values)
        session.add(
            WebhookAttempt(
                delivery_id=row.id,
                number=number,
                attempted_at=outcome.attempted_at,
                succeeded=outcome.succeeded,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
            )
        )
        disabled = await _endpoint_health(session, row.endpoint_id, outcome)
    if disabled:
        metrics.DISABLED.inc()
    return final


def _next_state(row: sa.Row[Any], number: int, outcome: Outcome) -> tuple[dict[str, Any], str | None]:
    values: dict[str, Any] = {
        "attempt_count": number,
        "last_attempt_at": outcome.attempted_at,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
    }
    if outcome.succeeded:
        return values | {"status": DELIVERED, "delivered_at": outcome.attempted_at}, DELIVERED
    retry_at = backoff.next_attempt_at(outcome.attempted_at, number, row.retry_until, backoff.random_jitter())
    if retry_at is None:
        return values | {"status": FAILED, "failed_at": outcome.attempted_at}, FAILED
    return values | {"next_attempt_at": retry_at}, None


async def _endpoint_health(session: AsyncSession, endpoint_id: str, outcome: Outcome) -> bool:
    """A success clears the endpoint's failing streak; three days of failures disable it (True)."""
    table = WebhookEndpoint.__table__
    at = outcome.attempted_at
    if outcome.succeeded:
        await session.execute(
            sa.update(table)
            .where(table.c.id == endpoint_id, table.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
        return False
    await session.execute(
        sa.update(table)
        .where(table.c.id == endpoint_id, table.c.failing_since.is_(None))
        .values(failing_since=at)
    )
    query = sa.select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id,
        WebhookEndpoint.enabled.is_(True),
        WebhookEndpoint.failing_since <= at - DISABLE_AFTER,
    )
    endpoint = (await session.scalars(query.with_for_update())).first()
    if endpoint is None:
        return False
    since = endpoint.failing_since
    set_enabled(endpoint, False, now=at, reason=f"every attempt failed since {since:%Y-%m-%dT%H:%M:%SZ}")
    endpoint.updated_at = at
    payload = {"endpoint_id": endpoint.id, "url": endpoint.url}
    await outbox.emit(session, tenant_id=endpoint.tenant_id, topic=ENDPOINT_DISABLED, payload=payload, now=at)
    log.warning("webhook_endpoint_disabled", endpoint=endpoint.id, tenant=endpoint.tenant_id)
    return True


def _count(row: sa.Row[Any], outcome: Outcome, final: str | None) -> None:
    result = "success" if outcome.succeeded else "failure"
    metrics.ATTEMPTS.labels(row.endpoint_id, row.event_type, result).inc()
    metrics.DURATION.labels(result).observe(outcome.duration_ms / 1000)
    if final is not None:
        metrics.DELIVERIES.labels(row.endpoint_id, row.event_type, final).inc()
