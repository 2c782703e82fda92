"""The outbox: one row per event, fan-out to the listed consumers, claimed dispatch, backoff,
failure and exactly-once handling."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from billing import jobs
from billing.core import outbox
from billing.core.context import AppContext
from billing.core.outbox import (
    CLAIM_BATCH,
    FAN_OUT,
    LEASE,
    MAX_ATTEMPTS,
    Consumer,
    Message,
    dispatch_all,
    emit,
    fan_out,
    retry_delay,
)
from billing.core.scheduler import run_tick
from billing.core.settings import Settings
from tests.conftest import TenantHandle

OUTBOX = outbox.OutboxEvent.__table__
TOPIC = "test.order_placed"


@dataclass
class Recorder:
    """A consumer's handler that records every message and can be told to fail."""

    name: str
    messages: list[Message] = field(default_factory=list)
    contexts: list[AppContext] = field(default_factory=list)
    fail_with: Callable[[Message], Exception | None] = lambda _message: None
    handler: Callable[[AppContext, Message], Any] | None = None

    async def __call__(self, ctx: AppContext, message: Message) -> None:
        self.messages.append(message)
        self.contexts.append(ctx)
        await asyncio.sleep(0)
        error = self.fail_with(message)
        if error is not None:
            raise error

    @property
    def consumer(self) -> Consumer:
        return Consumer(self.name, frozenset({TOPIC}), self.handler or self)

    def calls_per_event(self) -> Counter[str]:
        return Counter(m.event_id for m in self.messages)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder("test_outbox")


async def dispatch(ctx: AppContext, consumer: Consumer, **kwargs: Any) -> int:
    """Fan out what was emitted to ``consumer``, then handle one batch of its rows."""
    await fan_out(ctx, [consumer])
    return await outbox.dispatch(ctx, consumer, **kwargs)


async def emit_events(ctx: AppContext, tenant_id: str, count: int, topic: str = TOPIC) -> list[str]:
    async with ctx.database.transaction() as session:
        return [
            await emit(session, tenant_id=tenant_id, topic=topic, payload={"n": n}, now=ctx.clock.now())
            for n in range(count)
        ]


async def rows_of(ctx: AppContext, consumer: str | None = None) -> list[sa.Row[Any]]:
    query = sa.select(OUTBOX).order_by(OUTBOX.c.created_at, OUTBOX.c.id)
    if consumer is not None:
        query = query.where(OUTBOX.c.consumer == consumer)
    async with ctx.database.read() as session:
        return list((await session.execute(query)).all())


# --- emit ------------------------------------------------------------------------------------------


async def test_emit_writes_one_row_per_event_and_fan_out_copies_it_to_subscribed_consumers_only(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    async def ignore(_ctx: AppContext, _message: Message) -> None:
        return None

    orders = Consumer("test_orders", frozenset({TOPIC}), ignore)
    everything = Consumer("test_everything", frozenset({"*"}), ignore)
    refunds = Consumer("test_refunds", frozenset({"test.refund_issued"}), ignore)
    async with ctx.database.transaction() as session:
        event_id = await emit(
            session, tenant_id=tenant.id, topic=TOPIC, payload={"order": 7}, now=ctx.clock.now()
        )
        unsubscribed_id = await emit(
            session, tenant_id=tenant.id, topic="test.nobody_listens", payload={}, now=ctx.clock.now()
        )
    emitted = await rows_of(ctx)
    assert [(r.event_id, r.consumer, r.processed_at) for r in emitted] == [
        (event_id, FAN_OUT, None),
        (unsubscribed_id, FAN_OUT, None),
    ]

    assert await fan_out(ctx, [orders, everything, refunds]) == 2
    rows = await rows_of(ctx)
    for_event = [r for r in rows if r.event_id == event_id]
    assert sorted(r.consumer for r in for_event) == sorted([FAN_OUT, "test_orders", "test_everything"])
    assert all(
        r.topic == TOPIC
        and r.payload == {"order": 7}
        and r.tenant_id == tenant.id
        and r.attempts == 0
        and r.created_at == r.available_at == ctx.clock.now()
        and r.claimed_by is None
        for r in for_event
    )
    copies = [r for r in for_event if r.consumer != FAN_OUT]
    assert all(r.processed_at is None for r in copies)
    assert [r.processed_at for r in for_event if r.consumer == FAN_OUT] == [ctx.clock.now()]
    unsubscribed = [r for r in rows if r.event_id == unsubscribed_id]
    assert sorted(r.consumer for r in unsubscribed) == sorted([FAN_OUT, "test_everything"])

    assert await fan_out(ctx, [orders, everything, refunds]) == 0  # each event is fanned out once
    assert len(await rows_of(ctx)) == len(rows)


async def test_every_process_fans_out_to_the_consumers_of_the_composition_root(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    async with ctx.database.transaction() as session:
        await emit(
            session,
            tenant_id=tenant.id,
            topic="invoice.paid",
            payload={"invoice_id": "in_1"},
            now=ctx.clock.now(),
        )
    await fan_out(ctx, jobs.CONSUMERS)
    consumers = {r.consumer for r in await rows_of(ctx)} - {FAN_OUT}
    assert consumers == {c.name for c in jobs.CONSUMERS if "invoice.paid" in c.topics}
    assert {"dunning", "webhooks"} <= consumers


async def test_emit_for_a_topic_nobody_subscribes_to_writes_no_row_for_our_consumer(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    topic = "test.topic_without_consumers"
    await emit_events(ctx, tenant.id, 2, topic=topic)

    assert await dispatch(ctx, recorder.consumer) == 0
    rows = await rows_of(ctx)
    assert [r.consumer for r in rows] == [FAN_OUT, FAN_OUT]
    assert all(r.processed_at == ctx.clock.now() for r in rows)


async def test_nothing_is_emitted_when_the_transaction_rolls_back(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with ctx.database.transaction() as session:
            await emit(session, tenant_id=tenant.id, topic=TOPIC, payload={"n": 1}, now=ctx.clock.now())
            assert len((await session.execute(sa.select(OUTBOX.c.id))).all()) >= 1
            raise Abort

    assert await rows_of(ctx) == []
    assert await dispatch(ctx, recorder.consumer) == 0
    assert recorder.messages == []


# --- dispatch ------------------------------------------------------------------------------------


async def test_dispatch_delivers_each_message_once_with_its_payload_and_tenant(
    ctx: AppContext, make_tenant: Callable[..., Any], recorder: Recorder
) -> None:
    acme, globex = await make_tenant("Acme"), await make_tenant("Globex")
    created_at = ctx.clock.now()
    acme_events = await emit_events(ctx, acme.id, 2)
    globex_events = await emit_events(ctx, globex.id, 1)
    ctx.clock.advance(timedelta(seconds=30))

    assert await dispatch(ctx, recorder.consumer) == 3

    delivered = {m.event_id: m for m in recorder.messages}
    assert len(recorder.messages) == 3
    assert {e: delivered[e].tenant_id for e in acme_events + globex_events} == {
        **{e: acme.id for e in acme_events},
        **{e: globex.id for e in globex_events},
    }
    assert [dict(delivered[e].payload) for e in acme_events] == [{"n": 0}, {"n": 1}]
    assert dict(delivered[globex_events[0]].payload) == {"n": 0}
    assert all(m.topic == TOPIC and m.attempt == 1 and m.created_at == created_at for m in recorder.messages)
    assert all(c is ctx for c in recorder.contexts)

    rows = await rows_of(ctx, recorder.name)
    assert all(
        r.processed_at == ctx.clock.now()
        and r.attempts == 1
        and r.last_error is None
        and r.claimed_by is None
        and r.claim_expires_at is None
        for r in rows
    )


async def test_dispatch_does_not_handle_a_processed_row_again(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    [event_id] = await emit_events(ctx, tenant.id, 1)

    assert await dispatch(ctx, recorder.consumer) == 1
    assert await dispatch(ctx, recorder.consumer) == 0
    ctx.clock.advance(LEASE + timedelta(days=1))
    assert await dispatch(ctx, recorder.consumer) == 0

    assert recorder.calls_per_event() == {event_id: 1}


async def test_dispatch_does_not_deliver_rows_that_are_not_yet_due(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    async with ctx.database.transaction() as session:
        await emit(
            session,
            tenant_id=tenant.id,
            topic=TOPIC,
            payload={},
            now=ctx.clock.now() + timedelta(minutes=5),
        )

    assert await dispatch(ctx, recorder.consumer) == 0
    ctx.clock.advance(timedelta(minutes=5))
    assert await dispatch(ctx, recorder.consumer) == 1


async def test_dispatch_claims_at_most_its_limit(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    await emit_events(ctx, tenant.id, 5)

    assert await dispatch(ctx, recorder.consumer, limit=2) == 2
    assert await dispatch(ctx, recorder.consumer, limit=2) == 2
    assert await dispatch(ctx, recorder.consumer, limit=2) == 1
    assert await dispatch(ctx, recorder.consumer, limit=2) == 0
    assert sorted(recorder.calls_per_event().values()) == [1] * 5


def test_retry_delay_doubles_from_ten_seconds_up_to_an_hour() -> None:
    assert [retry_delay(a).total_seconds() for a in range(1, 6)] == [10, 20, 40, 80, 160]
    assert retry_delay(9) == timedelta(seconds=2560)
    assert retry_delay(10) == timedelta(hours=1)
    assert retry_delay(MAX_ATTEMPTS) == timedelta(hours=1)


async def test_failing_handler_is_retried_after_backoff_then_marked_failed(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    recorder.fail_with = lambda message: RuntimeError(f"boom {message.attempt}")
    [event_id] = await emit_events(ctx, tenant.id, 1)

    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await dispatch(ctx, recorder.consumer) == 1, f"attempt {attempt} was not delivered"
        assert recorder.messages[-1].attempt == attempt
        [row] = await rows_of(ctx, recorder.name)
        assert row.attempts == attempt
        assert row.last_error == f"RuntimeError: boom {attempt}"
        assert row.processed_at is None
        assert row.claimed_by is None and row.claim_expires_at is None
        if attempt == MAX_ATTEMPTS:
            break
        assert row.failed_at is None
        assert row.available_at == ctx.clock.now() + retry_delay(attempt)

        assert await dispatch(ctx, recorder.consumer) == 0
        ctx.clock.advance(retry_delay(attempt) - timedelta(seconds=1))
        assert await dispatch(ctx, recorder.consumer) == 0, f"retry {attempt} came before its backoff"
        ctx.clock.advance(timedelta(seconds=1))

    [row] = await rows_of(ctx, recorder.name)
    assert row.failed_at == ctx.clock.now()
    ctx.clock.advance(timedelta(days=30))
    assert await dispatch(ctx, recorder.consumer) == 0
    assert recorder.calls_per_event() == {event_id: MAX_ATTEMPTS}


async def test_a_retry_that_succeeds_marks_the_row_processed_and_clears_the_error(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    recorder.fail_with = lambda message: ConnectionError("smtp down") if message.attempt == 1 else None
    await emit_events(ctx, tenant.id, 1)

    assert await dispatch(ctx, recorder.consumer) == 1
    [row] = await rows_of(ctx, recorder.name)
    assert row.last_error == "ConnectionError: smtp down"

    ctx.clock.advance(retry_delay(1))
    assert await dispatch(ctx, recorder.consumer) == 1
    [row] = await rows_of(ctx, recorder.name)
    assert (row.attempts, row.last_error, row.failed_at) == (2, None, None)
    assert row.processed_at == ctx.clock.now()
    assert [m.attempt for m in recorder.messages] == [1, 2]


async def test_a_handler_that_outlives_its_lease_cannot_overwrite_the_new_claimers_outcome(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    async def slow_then_fail(handler_ctx: AppContext, message: Message) -> None:
        recorder.messages.append(message)
        if len(recorder.messages) == 1:
            # The lease runs out while this handler works; another dispatcher takes the row over.
            handler_ctx.clock.advance(LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
            assert await dispatch(handler_ctx, recorder.consumer) == 1
            raise RuntimeError("too late")

    recorder.handler = slow_then_fail
    await emit_events(ctx, tenant.id, 1)

    assert await dispatch(ctx, recorder.consumer) == 1

    [row] = await rows_of(ctx, recorder.name)
    assert len(recorder.messages) == 2
    assert row.processed_at is not None
    assert row.last_error is None
    assert row.attempts == 1
    assert row.claimed_by is None


async def test_dispatch_all_drains_every_batch_of_every_consumer(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    other = Recorder("test_outbox_other")
    events = await emit_events(ctx, tenant.id, CLAIM_BATCH + 5)
    assert await dispatch_all(ctx, [recorder.consumer, other.consumer]) == 2 * (CLAIM_BATCH + 5)

    assert recorder.calls_per_event() == dict.fromkeys(events, 1)
    assert other.calls_per_event() == dict.fromkeys(events, 1)


async def test_the_outbox_tick_dispatches_for_the_composition_roots_consumers(
    ctx: AppContext, tenant: TenantHandle, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "CONSUMERS", (*jobs.CONSUMERS, recorder.consumer))
    events = await emit_events(ctx, tenant.id, 3)
    [outbox_tick] = [t for t in jobs.ticks() if t.name == "outbox"]
    assert outbox_tick.every_seconds == 5
    assert await run_tick(ctx, outbox_tick) is True
    assert recorder.calls_per_event() == dict.fromkeys(events, 1)


# --- two dispatchers -----------------------------------------------------------------------------


@pytest.fixture
async def second_ctx(ctx: AppContext, settings: Settings) -> AsyncIterator[AppContext]:
    """Another replica: its own engine and connections on the same database and clock."""
    other = AppContext.create(settings, clock=ctx.clock)
    try:
        yield other
    finally:
        await other.close()


@pytest.mark.postgres_only
async def test_two_dispatchers_handle_every_row_exactly_once(
    ctx: AppContext, second_ctx: AppContext, tenant: TenantHandle, recorder: Recorder
) -> None:
    events = await emit_events(ctx, tenant.id, 200)
    handled_by: Counter[int] = Counter()

    async def dispatcher(replica: AppContext) -> None:
        while (handled := await dispatch(replica, recorder.consumer, limit=10)) > 0:
            handled_by[id(replica)] += handled

    await asyncio.wait_for(asyncio.gather(dispatcher(ctx), dispatcher(second_ctx)), timeout=20)

    assert recorder.calls_per_event() == dict.fromkeys(events, 1)
    assert handled_by[id(ctx)] > 0 and handled_by[id(second_ctx)] > 0
    assert handled_by[id(ctx)] + handled_by[id(second_ctx)] == 200
    rows = await rows_of(ctx, recorder.name)
    assert len(rows) == 200
    assert all(r.processed_at is not None and r.attempts == 1 and r.claimed_by is None for r in rows)
