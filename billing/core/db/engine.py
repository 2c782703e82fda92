"""Engines per dialect, sessions and transactions; telling an unreachable database from a failed statement."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_

from billing.core.db import sqlite_driver
from billing.core.db.queries import SqliteDecGreatest, SqliteDecSum

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITER_CACHE_KIB = 64 * 1024
WRITER_WAL_PAGES = 20_000  # 80 MB of 4 KiB pages
READ_ONLY = "billing_read_only"
# SQLSTATEs of a server that cannot be reached, is going away or is not up yet: class 08
# (connection exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
_DRIVER_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.")

_json_encoder = msgspec.json.Encoder()
_JSON = {
    "json_serializer": lambda obj: _json_encoder.encode(obj).decode(),
    "json_deserializer": msgspec.json.decode,
}


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_async_engine(
        url,
        **_JSON,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "billing"}, "timeout": 10},
    )


def _sqlite_engine(url: str, *, writer: bool = False) -> AsyncEngine:
    """The engine of a SQLite file; ``writer``: one connection only, tuned for writing.

    A connection's page cache lasts only while no other connection writes (SQLite drops it
    when it sees the database changed), so writes go through a connection of their own: its
    cache then holds the hot index pages from one write transaction to the next, instead of
    reading them again from the file every time. It also lets the write-ahead log grow to
    ``WRITER_WAL_PAGES`` before copying it into the database (SQLite's default is 1,000 pages,
    less than one batch of usage writes): a page written by many commits is copied once.
    """
    pool = {"pool_size": 1, "max_overflow": 0} if writer else {}
    engine = create_async_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool, **_JSON
    )
    pragmas = [
        "journal_mode=WAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "synchronous=FULL",
    ]
    if writer:
        pragmas += [f"cache_size=-{WRITER_CACHE_KIB}", f"wal_autocheckpoint={WRITER_WAL_PAGES}"]

    @event.listens_for(engine.sync_engine, "do_connect")
    def _driver(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["async_creator_fn"] = sqlite_driver.connect  # one thread trip per statement

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver, which would otherwise defer BEGIN
        # and commit around DDL on its own (SQLAlchemy's documented pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()
        _create_sqlite_aggregate(dbapi_connection, "dec_sum", SqliteDecSum)
        _create_sqlite_aggregate(dbapi_connection, "dec_greatest", SqliteDecGreatest)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads, then
        # writes, fails with SQLITE_BUSY when another writer got in between, whatever the timeout.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _create_sqlite_aggregate(dbapi_connection: Any, name: str, aggregate: type) -> None:
    # SQLAlchemy's aiosqlite adapter forwards create_function but not create_aggregate: run it
    # on aiosqlite's own thread, where its sqlite3 connection lives.
    driver = dbapi_connection.driver_connection
    await_(driver._execute(driver._conn.create_aggregate, name, 1, aggregate))


class Database:
    """Engines and their session factories; one per process. On SQLite, write transactions have
    an engine of their own, of one connection (see ``_sqlite_engine``)."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._write_engine = _sqlite_engine(url, writer=True) if self.dialect == "sqlite" else self.engine
        self._sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        # SQLite has one writer at a time: queue this process's writers here, in order, rather
        # than in SQLite's busy handler, which polls with sleeps of up to 100 ms.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed when the block ends, rolled back on error.

        Not reentrant: never open a transaction inside another one.
        """
        async with self._writer_turn(), self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (on SQLite it does not take the write lock)."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.read() as session:
            await session.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._write_engine is not self.engine:
            await self._write_engine.dispose()


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database cannot be reached right now: refused,
    lost, shutting down or starting up, or no pooled connection came free in time. A statement the
    database rejected is not unavailability."""
    link: BaseException | None = exc
    for _ in range(8):  # the chain is short: ours, SQLAlchemy's, the adapter's, the driver's
        if link is None:
            return False
        if _unreachable(link):
            return True
        link = link.__cause__ or link.__context__
    return False


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # the pool's, not a statement's
        return True
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state.startswith(UNAVAILABLE_SQLSTATES):
        return True
    if isinstance(exc, OSError | TimeoutError):
        # A refused or timed-out connect comes out of the driver unwrapped: tell it from other
        # network errors by where it was raised.
        modules = (
            str(frame.f_globals.get("__name__", "")) for frame, _ in traceback.walk_tb(exc.__traceback__)
        )
        return any(module.startswith(_DRIVER_MODULES) for module in modules)
    return False
