"""Several ``billing`` processes on one PostgreSQL database: API replicas (scheduler off) and workers.

Builds on the crash tests' harness (``Deployment``, ``Proc``, ``Server``): the processes run this
checkout's code, share the secret key and the data dir, and write their output to
``<data dir>/<name>.log``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from billing.core.clock import SystemClock
from billing.core.db.engine import Database
from billing.core.migrate import upgrade_async
from billing.tenants import service
from billing.web.auth import Scope
from tests.crash.harness import Deployment, Proc, Server, free_port

STOP_SECONDS = 15.0
WORKER_READY_SECONDS = 30.0


async def deploy(url: str, data_dir: Path) -> Deployment:
    """Migrate ``url`` and create the tenant Acme with an admin key."""
    await upgrade_async(url)
    database = Database(url, pool_size=4)
    now = SystemClock().now()
    async with database.transaction() as session:
        tenant = await service.create_tenant(session, name="Acme", currency="USD", now=now)
        _, admin_key = await service.create_api_key(
            session, tenant_id=tenant.id, scope=Scope.ADMIN, name="admin", now=now
        )
    return Deployment("postgresql", url, data_dir, tenant.id, admin_key, database)


async def wait_worker_started(proc: Proc) -> None:
    """Until the worker's scheduler has started (its ticks are scheduled)."""
    deadline = asyncio.get_running_loop().time() + WORKER_READY_SECONDS
    while "scheduler_started" not in proc.output():
        proc.check_exit()
        assert proc.running, f"{proc.name} exited before its scheduler started:\n{proc.output()}"
        assert asyncio.get_running_loop().time() < deadline, f"{proc.name} did not start:\n{proc.output()}"
        await asyncio.sleep(0.1)


async def stop(proc: Proc) -> int | None:
    """SIGTERM, then SIGKILL if it is still running after ``STOP_SECONDS``; the exit status."""
    if proc.running:
        proc.process.send_signal(signal.SIGTERM)
        with suppress(TimeoutError):
            await asyncio.wait_for(proc.process.wait(), STOP_SECONDS)
    await proc.kill()
    return proc.process.returncode


@dataclass
class Cluster:
    replicas: list[Server] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    @property
    def processes(self) -> list[Proc]:
        return [server.proc for server in self.replicas] + self.workers

    def assert_all_running(self) -> None:
        """No process died along the way (a crash would hide work not done)."""
        for proc in self.processes:
            assert proc.running, f"{proc.name} exited with {proc.process.returncode}:\n{proc.output()}"

    def tracebacks(self) -> list[str]:
        return [proc.name for proc in self.processes if "Traceback" in proc.output()]


@asynccontextmanager
async def cluster(
    deployment: Deployment, *, replicas: int, workers: int, **env: str
) -> AsyncIterator[Cluster]:
    """Start ``replicas`` API replicas and ``workers`` workers together; stop them all at the end."""
    running = Cluster()

    async def replica(n: int) -> None:
        port = free_port()
        args = ("-m", "billing.cli", "serve", "--host", "127.0.0.1", "--port", str(port))
        server = Server(await Proc.start(deployment, f"serve-{n}", *args, **env), port, deployment.admin_key)
        running.replicas.append(server)
        await server.wait_ready()

    async def worker(n: int) -> None:
        args = ("-m", "billing.cli", "worker")
        proc = await Proc.start(deployment, f"worker-{n}", *args, **{"BILLING_LOG_LEVEL": "info", **env})
        running.workers.append(proc)
        await wait_worker_started(proc)

    try:
        starts = [replica(n) for n in range(1, replicas + 1)] + [worker(n) for n in range(1, workers + 1)]
        await asyncio.gather(*starts)
        running.replicas.sort(key=lambda server: server.proc.name)
        running.workers.sort(key=lambda proc: proc.name)
        yield running
    finally:
        await asyncio.gather(*(stop(proc) for proc in running.processes))


class Laps:
    """Seconds spent in each phase of a test, for its printed summary (the suite's time is bounded)."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.laps: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name], self._last = now - self._last, now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.laps.items())


def admin_client(deployment: Deployment, server: Server, *, timeout: float) -> httpx.AsyncClient:
    """A client of ``server`` as the tenant's admin; requests that take longer than ``timeout`` fail."""
    headers = {"Authorization": f"Bearer {deployment.admin_key}"}
    return httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=timeout)
