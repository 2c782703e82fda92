"""Ticks: APScheduler 3 says "now is a good time to look"; the work itself is claimed in the database.

The ticks are given to it (``billing.jobs`` lists them); any number of replicas may run them at
once. The job store is memory only: nothing about the work lives in the scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Counter, Histogram

from billing.core.clock import monotonic_ns
from billing.core.context import AppContext
from billing.core.db.engine import database_unavailable

TickFunction = Callable[[AppContext], Awaitable[object]]
TICK_RUNS = Counter("billing_tick_runs_total", "Tick runs by tick and outcome", ["tick", "outcome"])
TICK_SECONDS = Histogram("billing_tick_duration_seconds", "Tick duration", ["tick"])
log = structlog.get_logger("billing.core.scheduler")


@dataclass(frozen=True)
class Tick:
    name: str
    every_seconds: int
    run: TickFunction


async def run_tick(ctx: AppContext, item: Tick) -> bool:
    """Run one tick; a failure is logged and counted, never raised into the scheduler."""
    started = monotonic_ns()
    try:
        await item.run(ctx)
    except Exception as exc:
        if database_unavailable(exc):  # a restart or failover: expected, and the next tick retries
            TICK_RUNS.labels(item.name, "database_unavailable").inc()
            log.warning("database_unavailable", tick=item.name, error_type=type(exc).__name__)
            return False
        TICK_RUNS.labels(item.name, "error").inc()
        log.error("tick_failed", tick=item.name, error_type=type(exc).__name__, exc_info=exc)
        return False
    finally:
        TICK_SECONDS.labels(item.name).observe((monotonic_ns() - started) / 1e9)
    TICK_RUNS.labels(item.name, "ok").inc()
    return True


class Scheduler:
    def __init__(self, ctx: AppContext, ticks: Sequence[Tick]) -> None:
        self.ctx = ctx
        self.ticks = list(ticks)
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        for item in self.ticks:
            scheduler.add_job(
                run_tick, "interval", seconds=item.every_seconds, args=[self.ctx, item], id=item.name
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduler_started", ticks=[t.name for t in self.ticks])

    def shutdown(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
