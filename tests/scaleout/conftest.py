"""Fixtures of the scale-out tests: a fresh PostgreSQL database per test (on the shared server, or on
a private server that the test may stop), the fakes the processes send to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, SKIP_POSTGRES
from tests.crash.harness import Deployment, free_port
from tests.fakes.smtp_sink import SmtpSink, running_sink
from tests.fakes.webhook_receiver import WebhookReceiver, running_receiver
from tests.scaleout.cluster import deploy
from tests.scaleout.private_postgres import PrivatePostgres, missing


def _require_postgres() -> None:
    """PostgreSQL tests follow the suite's convention: skipped, visibly, without the URL."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("BILLING_TEST_REQUIRE_POSTGRES=1 but BILLING_TEST_POSTGRES_URL is not set")
        pytest.skip(SKIP_POSTGRES)


@pytest.fixture(params=["postgresql"])  # the id marks these as PostgreSQL tests for the suite's count
async def deployment(tmp_path: Path, fresh_postgres_database: Callable[[], str]) -> AsyncIterator[Deployment]:
    """A database of its own on the shared server, migrated, with the tenant Acme."""
    url = await asyncio.to_thread(fresh_postgres_database)  # it runs its own event loop
    deployed = await deploy(url, tmp_path)
    try:
        yield deployed
    finally:
        await deployed.database.dispose()


@pytest.fixture(params=["postgresql"])
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, running; removed at the end however the test ends."""
    _require_postgres()
    reason = missing()
    if reason is not None:
        pytest.skip(f"no private PostgreSQL server to restart: {reason}")
    server = PrivatePostgres(free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def private_deployment(private_postgres: PrivatePostgres, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A migrated database with the tenant Acme on the private server."""
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{private_postgres.port}/postgres")
    try:
        await connection.execute('CREATE DATABASE "billing"')
    finally:
        await connection.close()
    deployed = await deploy(private_postgres.url("billing"), tmp_path)
    try:
        yield deployed
    finally:
        await deployed.database.dispose()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_sink() as sink:
        yield sink


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as running:
        yield running
