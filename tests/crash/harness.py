"""Running the service as real processes and killing them with SIGKILL at chosen points.

A ``Deployment`` is one database (a SQLite file, or a fresh PostgreSQL database) with a migrated
schema and one tenant. ``Proc`` is a ``billing serve`` or driver process on it, started from this
checkout; its output goes to a file in the data dir and is shown when it fails. ``kill_when``
polls a progress condition and sends SIGKILL once it holds, after a seeded jitter.

``BILLING_CRASH_ROUNDS`` (default 2) is how many kills each scenario makes before it lets the
work finish; ``BILLING_CRASH_SEED`` replays the kill points of an earlier run.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from billing.app import create_app
from billing.core.clock import SystemClock, format_timestamp
from billing.core.db.engine import Database
from billing.core.settings import Settings
from tests.conftest import TEST_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("BILLING_CRASH_ROUNDS") or "2")
SEED = int(os.environ.get("BILLING_CRASH_SEED") or random.SystemRandom().randrange(1, 10**9))
READY_SECONDS = 30.0
WORK_SECONDS = 120.0
POLL_SECONDS = 0.002
# Business time between a killed run and the next one: longer than any claim's lease (charges,
# outbox rows, emails, webhook deliveries), so that the next run takes over what was cut.
RESTART_AFTER = timedelta(minutes=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def month_start(offset: int) -> datetime:
    """The first instant (UTC) of the calendar month ``offset`` months from the current one."""
    now = SystemClock().now()
    index = now.year * 12 + now.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def stamp(at: datetime) -> str:
    return format_timestamp(at)


@dataclass
class Deployment:
    """One database with a migrated schema and the tenant ``Acme``; processes share it."""

    dialect: str
    database_url: str
    data_dir: Path
    tenant_id: str
    admin_key: str
    database: Database  # the test's own connection, for checking what the processes left

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
        env.update(
            PYTHONPATH=str(ROOT),  # this checkout's code, whatever the virtualenv was installed from
            BILLING_DATABASE_URL=self.database_url,
            BILLING_DATA_DIR=str(self.data_dir),
            BILLING_SECRET_KEY=TEST_SECRET_KEY,
            BILLING_ENV="test",
            BILLING_SCHEDULER="off",
            BILLING_ALLOW_TIME_TRAVEL="1",
            BILLING_LOG_LEVEL="warning",
        )
        env.update(extra)
        return env

    def settings(self) -> Settings:
        return Settings(
            env="test",
            data_dir=self.data_dir,
            database_url=self.database_url,
            secret_keys=(TEST_SECRET_KEY,),
            scheduler=False,
            allow_time_travel=True,
            log_level="WARNING",
        )

    async def scalar(self, query: sa.Select[Any]) -> Any:
        async with self.database.read() as session:
            return await session.scalar(query)

    async def rows(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        async with self.database.read() as session:
            return list((await session.execute(query)).all())


class Api:
    """The HTTP API as the tenant's admin: calls that must answer ``status``, and whole lists."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, method: str, path: str, body: object = None, *, status: int = 200) -> Any:
        response = await self.client.request(method, path, json=body)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    async def create(self, path: str, body: object) -> Any:
        return await self.call("POST", path, body, status=201)

    async def every(self, path: str, **params: str) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        items: list[dict[str, Any]] = []
        while True:
            query = {"limit": "100", **params} | ({"starting_after": items[-1]["id"]} if items else {})
            response = await self.client.get(path, params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            items += page["data"]
            if not page["has_more"]:
                return items


@asynccontextmanager
async def in_process_api(deployment: Deployment) -> AsyncIterator[Api]:
    """The app in the test's own process on the deployment's database: for setting up and reading
    back, never for the work that gets killed."""
    app = create_app(deployment.settings(), scheduler=False)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {deployment.admin_key}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://setup", headers=headers) as client:
            yield Api(client)
    finally:
        await app.state.ctx.close()


class Proc:
    """A Python subprocess on the deployment, output to ``<data dir>/<name>.log``."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.process, self.log = name, process, log

    @classmethod
    async def start(cls, deployment: Deployment, name: str, *args: str, **env: str) -> Proc:
        log = deployment.data_dir / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, *args, env=deployment.env(**env), cwd=ROOT, stdout=out, stderr=out
            )
        return cls(name, process, log)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def check_exit(self) -> None:
        """Fail with the process's output if it ended in error."""
        code = self.process.returncode
        assert code in (None, 0), f"{self.name} exited with {code}:\n{self.output()}"

    async def kill(self) -> bool:
        """SIGKILL; True if it was still running (killed mid-work rather than already done)."""
        if not self.running:
            return False
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        return self.process.returncode == -signal.SIGKILL

    async def finish(self) -> None:
        """Wait for a clean exit."""
        try:
            await asyncio.wait_for(self.process.wait(), WORK_SECONDS)
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.name} did not finish in {WORK_SECONDS} s:\n{self.output()}"
            ) from None
        self.check_exit()


class Server:
    """``billing serve`` (scheduler off) on a free port of 127.0.0.1."""

    def __init__(self, proc: Proc, port: int, admin_key: str) -> None:
        self.proc, self.port = proc, port
        self.base_url = f"http://127.0.0.1:{port}"
        self._headers = {"Authorization": f"Bearer {admin_key}"}

    @classmethod
    async def start(cls, deployment: Deployment, name: str, **env: str) -> Server:
        port = free_port()
        args = ("-m", "billing.cli", "serve", "--host", "127.0.0.1", "--port", str(port))
        server = cls(await Proc.start(deployment, name, *args, **env), port, deployment.admin_key)
        await server.wait_ready()
        return server

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1) as client:
            while True:
                self.proc.check_exit()
                assert self.proc.running, f"{self.proc.name} exited before it was ready"
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{self.proc.name} not ready:\n{self.proc.output()}"
                await asyncio.sleep(0.05)

    def client(self) -> httpx.AsyncClient:
        """A client as the tenant's admin, patient enough for a whole billing run."""
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=WORK_SECONDS)


Condition = Callable[[], bool | Awaitable[bool]]


async def billing_run(client: httpx.AsyncClient, at: datetime) -> httpx.Response | httpx.TransportError:
    """``POST /v1/billing/run`` at ``at``: its answer, or the error of a connection a kill cut."""
    try:
        return await client.post("/v1/billing/run", json={"at": stamp(at)})
    except httpx.TransportError as exc:
        return exc


def completed(outcome: httpx.Response | httpx.TransportError) -> dict[str, Any]:
    """The summary of a billing run that was not interrupted and succeeded."""
    assert isinstance(outcome, httpx.Response), f"the billing run was cut: {outcome!r}"
    assert outcome.status_code == 200, outcome.text
    result: dict[str, Any] = outcome.json()
    return result


async def kill_when(
    proc: Proc, reached: Condition, rng: random.Random, *, jitter: float = 0.01, poll: float = POLL_SECONDS
) -> bool:
    """SIGKILL ``proc`` as soon as ``reached()`` holds (checked every ``poll`` seconds), plus up to
    ``jitter`` seconds; False when the process finished its work first (it is then not killed)."""
    deadline = time.monotonic() + WORK_SECONDS
    while True:
        outcome = reached()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            break
        if not proc.running:
            proc.check_exit()
            return False
        assert time.monotonic() < deadline, f"{proc.name}: kill point not reached:\n{proc.output()}"
        await asyncio.sleep(poll)
    await asyncio.sleep(rng.uniform(0, jitter))
    return await proc.kill()
