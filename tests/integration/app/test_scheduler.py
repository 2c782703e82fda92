"""Ticks: run_tick counts and contains failures; the APScheduler wrapper runs ticks and stops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from billing import jobs
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.scheduler import Scheduler, Tick, run_tick
from billing.core.settings import Settings
from tests.conftest import FROZEN_AT, TEST_SECRET_KEY


@pytest.fixture
async def plain_ctx(tmp_path: Path) -> AsyncIterator[AppContext]:
    """A context whose ticks never touch the database: the scheduler itself is what is tested."""
    settings = Settings(
        env="test",
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        secret_keys=(TEST_SECRET_KEY,),
        scheduler=False,
        log_level="WARNING",
    )
    context = AppContext.create(settings, clock=FrozenClock(FROZEN_AT))
    try:
        yield context
    finally:
        await context.close()


def tick_runs(name: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("billing_tick_runs_total", {"tick": name, "outcome": outcome})
    return value or 0.0


def tick_durations(name: str) -> float:
    return REGISTRY.get_sample_value("billing_tick_duration_seconds_count", {"tick": name}) or 0.0


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_run_tick_of_a_succeeding_tick_returns_true_and_counts_ok(plain_ctx: AppContext) -> None:
    name = unique_name("test_ok")
    seen: list[AppContext] = []

    async def succeed(ctx: AppContext) -> None:
        seen.append(ctx)

    assert await run_tick(plain_ctx, Tick(name, 60, succeed)) is True

    assert seen == [plain_ctx]
    assert tick_runs(name, "ok") == 1
    assert tick_runs(name, "error") == 0
    assert tick_durations(name) == 1


async def test_run_tick_of_a_failing_tick_returns_false_counts_an_error_and_does_not_raise(
    plain_ctx: AppContext,
) -> None:
    name = unique_name("test_error")

    async def fail(_ctx: AppContext) -> None:
        raise RuntimeError("tick broke")

    assert await run_tick(plain_ctx, Tick(name, 60, fail)) is False
    assert await run_tick(plain_ctx, Tick(name, 60, fail)) is False

    assert tick_runs(name, "error") == 2
    assert tick_runs(name, "ok") == 0
    assert tick_durations(name) == 2


async def test_scheduler_runs_its_tick_every_interval_despite_failures_and_stops_on_shutdown(
    plain_ctx: AppContext,
) -> None:
    name = unique_name("test_sched")
    runs: list[AppContext] = []
    ran_twice = asyncio.Event()

    async def first_fails(ctx: AppContext) -> None:
        runs.append(ctx)
        if len(runs) >= 2:
            ran_twice.set()
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    scheduler = Scheduler(plain_ctx, ticks=[Tick(name, 1, first_fails)])
    scheduler.start()
    try:
        try:
            await asyncio.wait_for(ran_twice.wait(), timeout=4)
        except TimeoutError:
            pytest.fail(f"the tick ran {len(runs)} times in 4 s at a 1 s interval")
    finally:
        scheduler.shutdown()

    assert all(ctx is plain_ctx for ctx in runs)
    assert tick_runs(name, "error") == 1
    assert tick_runs(name, "ok") == len(runs) - 1

    runs_at_shutdown = len(runs)
    await asyncio.sleep(1.3)  # longer than the interval: a live job would have run again
    assert len(runs) == runs_at_shutdown
    scheduler.shutdown()  # a second shutdown is harmless


def test_every_job_is_a_tick_at_its_own_interval() -> None:
    ticks = {t.name: t for t in jobs.ticks()}

    assert list(ticks) == [job.name for job in jobs.JOBS]
    assert {name: tick.every_seconds for name, tick in ticks.items()} == {
        job.name: job.every_seconds for job in jobs.JOBS
    }
    assert ticks["outbox"].every_seconds == 5
    assert {
        "close_periods",
        "payments_charge",
        "dunning",
        "stripe_events",
        "notifications",
        "webhooks",
    } <= set(ticks)
