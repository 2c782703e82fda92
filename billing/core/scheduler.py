"""Ticks: APScheduler 3 says "now is a good time to look"; the work itself is claimed in the database.

Domains register ticks with :func:`tick`; any number of replicas may run them at once. The job
store is memory only: nothing about the work lives in the scheduler.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Counter, Histogram

from billing.core.clock import monotonic_ns
from billing.core.context import AppContext
from billing.core.db.engine import database_unavailable

TickFunction = Callable[[AppContext], Awaitable[None]]
# A tick function keeps its own signature (deliver_all also takes at= and tenant_id=).
F = TypeVar("F", bound=TickFunction)
# Modules whose import registers their ticks.
TICK_MODULES: tuple[str, ...] = (
    "billing.invoicing.run",
    "billing.notifications.dispatch",
    "billing.core.outbox",
    "billing.payments.reconcile",
    "billing.dunning.run",
    "billing.stripe_events.process",
    "billing.webhooks.dispatcher",
)

TICK_RUNS = Counter("billing_tick_runs_total", "Tick runs by tick and outcome", ["tick", "outcome"])
TICK_SECONDS = Histogram("billing_tick_duration_seconds", "Tick duration", ["tick"])
log = structlog.get_logger("billing.core.scheduler")


@dataclass(frozen=True)
class Tick:
    name: str
    every_seconds: int
    run: TickFunction


_TICKS: dict[str, Tick] = {}


def tick(name: str, *, every_seconds: int) -> Callable[[F], F]:
    """Register ``fn`` to run every ``every_seconds`` on every replica that runs the scheduler."""

    def register(fn: F) -> F:
        _TICKS[name] = Tick(name, every_seconds, fn)
        return fn

    return register


def registered_ticks() -> list[Tick]:
    for module in TICK_MODULES:
        importlib.import_module(module)
    return sorted(_TICKS.values(), key=lambda t: t.name)


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


async def run_all_ticks(ctx: AppContext) -> None:
    for item in registered_ticks():
        await run_tick(ctx, item)


class Scheduler:
    def __init__(self, ctx: AppContext, ticks: list[Tick] | None = None) -> None:
        self.ctx = ctx
        self.ticks = registered_ticks() if ticks is None else ticks
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
