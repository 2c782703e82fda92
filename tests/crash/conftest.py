"""Fixtures of the crash tests: a fresh database per test (SQLite and PostgreSQL), its in-process
API for setting up and reading back, and a seeded random source for the kill points."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from billing.core.clock import SystemClock
from billing.core.db.engine import Database
from billing.core.migrate import upgrade_async
from billing.tenants import service
from billing.web.auth import Scope
from tests.conftest import DIALECTS
from tests.crash.harness import ROUNDS, SEED, Api, Deployment, in_process_api


def pytest_report_header() -> str:
    return f"crash tests: BILLING_CRASH_SEED={SEED} BILLING_CRASH_ROUNDS={ROUNDS}"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Kill points drawn from ``BILLING_CRASH_SEED`` and the test's name: set the seed printed
    with a failure to draw the same points again."""
    print(f"BILLING_CRASH_SEED={SEED} BILLING_CRASH_ROUNDS={ROUNDS} ({request.node.name})")
    return random.Random(f"{SEED}:{request.node.name}")


@pytest.fixture(params=DIALECTS)
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_postgres_database: Callable[[], str]
) -> AsyncIterator[Deployment]:
    """A database of its own (never shared with other tests: invoice numbers start at 1), migrated,
    with the tenant Acme and its admin key."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    else:
        url = await asyncio.to_thread(fresh_postgres_database)  # it runs its own event loop
    await upgrade_async(url)
    database = Database(url)
    now = SystemClock().now()
    async with database.transaction() as session:
        tenant = await service.create_tenant(session, name="Acme", currency="USD", now=now)
        _, admin_key = await service.create_api_key(
            session, tenant_id=tenant.id, scope=Scope.ADMIN, name="admin", now=now
        )
    try:
        yield Deployment(request.param, url, tmp_path, tenant.id, admin_key, database)
    finally:
        await database.dispose()


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[Api]:
    async with in_process_api(deployment) as setup:
        yield setup
