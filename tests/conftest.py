"""Every database test runs on SQLite and, when BILLING_TEST_POSTGRES_URL is set, on PostgreSQL.

Databases are migrated with Alembic (never ``create_all``), once per session and dialect; each
test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from sqlalchemy.engine import make_url

from billing import jobs
from billing.app import build_app, use_context
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.logs import configure_logging
from billing.core.migrate import upgrade
from billing.core.outbox import Consumer, Message
from billing.core.settings import Settings
from billing.models import metadata
from billing.tenants import service
from billing.web.auth import Scope

POSTGRES_URL = os.environ.get("BILLING_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("BILLING_TEST_REQUIRE_POSTGRES") == "1"
SKIP_POSTGRES = (
    "PostgreSQL tests skipped: set BILLING_TEST_POSTGRES_URL="
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test (.ci/run does)"
)
TEST_SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnop"
FROZEN_AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DIALECTS = ["sqlite", "postgresql"]

_postgres_tests_run = 0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_only: runs on PostgreSQL only")
    config.addinivalue_line("markers", "sqlite_only: runs on SQLite only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the dialect variants a test opts out of (``postgres_only`` / ``sqlite_only``)."""
    keep = []
    for item in items:
        dialect = getattr(item, "callspec", None) and item.callspec.params.get("database_url")
        if dialect == "sqlite" and item.get_closest_marker("postgres_only"):
            continue
        if dialect == "postgresql" and item.get_closest_marker("sqlite_only"):
            continue
        keep.append(item)
    items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_tests_run
    if report.when == "call" and report.passed and "[postgresql" in report.nodeid:
        _postgres_tests_run += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "[postgresql" in r.nodeid]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} PostgreSQL variants skipped. {SKIP_POSTGRES}", yellow=True
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a run whose PostgreSQL tests were all skipped is a failure, not a pass."""
    if REQUIRE_POSTGRES and exitstatus == 0 and _postgres_tests_run == 0 and session.testscollected:
        session.exitstatus = 1
        print("\nBILLING_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL test passed")


async def _admin(sql: str) -> None:
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _run(coro: Awaitable[Any]) -> Any:
    import asyncio

    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def fresh_postgres_database() -> Iterator[Callable[[], str]]:
    """Create empty PostgreSQL databases beside the configured one; drop them at the end."""
    created: list[str] = []

    def create() -> str:
        if not POSTGRES_URL:
            if REQUIRE_POSTGRES:
                pytest.fail("BILLING_TEST_REQUIRE_POSTGRES=1 but BILLING_TEST_POSTGRES_URL is not set")
            pytest.skip(SKIP_POSTGRES)
        name = f"billing_test_{uuid.uuid4().hex[:12]}"
        _run(_admin(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=DIALECTS)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fresh_postgres_database: Callable[[], str],
) -> str:
    """A migrated database per dialect, shared by the session's tests."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'billing.db'}"
    else:
        url = fresh_postgres_database()
    upgrade(url)
    return url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(FROZEN_AT)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path,
        database_url=database_url,
        secret_keys=(TEST_SECRET_KEY,),
        scheduler=False,
        allow_time_travel=True,
        log_level="WARNING",
    )


# Building the app's routes takes 0.2-0.4 s, more than most tests: tests share one app per body
# limit, each with a context (settings, clock, database) of its own.
_apps: dict[int, Litestar] = {}


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[Litestar]:
    application = _apps.get(settings.max_body_bytes)
    if application is None:
        application = _apps[settings.max_body_bytes] = build_app(
            max_body_bytes=settings.max_body_bytes, scheduler=False
        )
    configure_logging(settings.log_level, settings.log_format)
    use_context(application, AppContext.create(settings, clock=clock))
    yield application
    await _empty_tables(application.state.ctx)


@pytest.fixture
def ctx(app: Litestar) -> AppContext:
    context: AppContext = app.state.ctx
    return context


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app in the test's own event loop.

    Litestar's AsyncTestClient runs the app on a portal thread with another event loop
    (litestar#1920), where asyncpg connections shared with the test's fixtures break. The app's
    lifespan only starts the scheduler, which tests drive by hand; the ``app`` fixture closes it.
    """
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        yield test_client


async def _empty_tables(ctx: AppContext) -> None:
    async with ctx.database.transaction() as session:
        for table in reversed(metadata.sorted_tables):
            await session.execute(sa.delete(table))
    await ctx.close()


@dataclass
class TenantHandle:
    """A tenant with one key per scope, for calling the API as that tenant."""

    id: str
    keys: dict[Scope, str] = field(default_factory=dict)
    key_ids: dict[Scope, str] = field(default_factory=dict)

    def headers(self, scope: Scope = Scope.ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@pytest.fixture
def make_tenant(ctx: AppContext) -> Callable[..., Awaitable[TenantHandle]]:
    async def make(name: str = "Acme", currency: str = "USD") -> TenantHandle:
        async with ctx.database.transaction() as session:
            tenant = await service.create_tenant(session, name=name, currency=currency, now=ctx.clock.now())
            handle = TenantHandle(tenant.id)
            for scope in Scope:
                key, plaintext = await service.create_api_key(
                    session, tenant_id=tenant.id, scope=scope, name=scope.value, now=ctx.clock.now()
                )
                handle.keys[scope] = plaintext
                handle.key_ids[scope] = key.id
        return handle

    return make


@pytest.fixture
async def tenant(make_tenant: Callable[..., Awaitable[TenantHandle]]) -> TenantHandle:
    return await make_tenant()


async def subscribe(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    customers: list[str],
    *,
    starts_at: str,
    plan: str = "unpriced",
) -> list[dict[str, Any]]:
    """Subscribe customers (so that their events are accepted), by default to a plan that prices
    nothing; the plan ``unpriced`` is created on first use."""
    headers = tenant.headers()
    if plan == "unpriced":
        response = await client.post("/v1/plans", headers=headers, json={"code": "unpriced"})
        assert response.status_code in (201, 409), response.text
    subscriptions = []
    for customer in customers:
        body = {"customer": customer, "plan": plan, "starts_at": starts_at}
        response = await client.post("/v1/subscriptions", headers=headers, json=body)
        assert response.status_code == 201, response.text
        subscriptions.append(response.json())
    return subscriptions


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until ``predicate()`` holds, polling; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@contextmanager
def listening(topics: set[str], name: str = "test") -> Iterator[list[Message]]:
    """The messages of these topics, as an outbox consumer of the composition root's list gets
    them, in order: a consumer added to ``billing.jobs.CONSUMERS`` while the block runs."""
    seen: list[Message] = []

    async def handle(_ctx: AppContext, message: Message) -> None:
        seen.append(message)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs, "CONSUMERS", (*jobs.CONSUMERS, Consumer(name, frozenset(topics), handle)))
        yield seen
