"""billing.core.db.sqlite_driver under SQLAlchemy: one trip to the connection's thread per statement, and
every result SQLAlchemy reads (rows, streamed rows, rowcount, errors) as aiosqlite gives them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.core.db import sqlite_driver
from billing.core.db.engine import create_engine

ITEMS = sa.table("items", sa.column("id"), sa.column("name"))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    yield engine
    await engine.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call run on a connection's thread."""
    calls: list[Any] = []
    original = sqlite_driver.Connection._execute

    async def counted(self: sqlite_driver.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(sqlite_driver.Connection, "_execute", counted)
    return calls


async def test_the_engine_connects_through_the_driver(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_driver.Connection)


async def test_a_statement_is_one_trip_to_the_connections_thread(
    engine: AsyncEngine, trips: list[Any]
) -> None:
    async with engine.connect() as connection:
        await connection.execute(sa.text("SELECT 0"))  # after BEGIN, a trip of its own
        trips.clear()
        rows = (await connection.execute(sa.text("SELECT 1, 'a' UNION ALL SELECT 2, 'b'"))).all()
        assert len(trips) == 1
    assert [tuple(row) for row in rows] == [(1, "a"), (2, "b")]


async def test_inserts_updates_and_returning_report_their_rows(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(
            sa.insert(ITEMS).returning(ITEMS.c.id), [{"name": "a"}, {"name": "b"}, {"name": "c"}]
        )
        assert sorted(inserted.scalars().all()) == [1, 2, 3]
        updated = await connection.execute(
            sa.update(ITEMS).where(ITEMS.c.id > 1).values(name=ITEMS.c.name + "!")
        )
        assert updated.rowcount == 2
        many = await connection.execute(
            sa.update(ITEMS).where(ITEMS.c.id == sa.bindparam("b_id")).values(name=sa.bindparam("b_name")),
            [{"b_id": 1, "b_name": "y"}, {"b_id": 2, "b_name": "z"}, {"b_id": 99, "b_name": "x"}],
        )
        assert many.rowcount == 2
        single = await connection.execute(sa.insert(ITEMS).values(name="d"))
        assert single.lastrowid == 4
    async with engine.connect() as connection:
        names = (await connection.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).scalars().all()
    assert names == ["y", "z", "c!", "d"]


async def test_streamed_rows_arrive_in_order_and_in_full(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.insert(ITEMS), [{"name": f"n{n:03d}"} for n in range(250)])
    async with engine.connect() as connection:
        result = await connection.stream(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))
        streamed = [name async for name in result.scalars()]
    assert streamed == [f"n{n:03d}" for n in range(250)]


async def test_errors_are_sqlalchemys_and_roll_the_transaction_back(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(sa.insert(ITEMS).values(name="same"))
            await connection.execute(sa.insert(ITEMS).values(name="same"))
    with pytest.raises(sa.exc.OperationalError):
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT * FROM no_such_table"))
    async with engine.connect() as connection:
        assert (await connection.execute(sa.select(sa.func.count()).select_from(ITEMS))).scalar() == 0


async def test_a_transaction_costs_one_trip_more_than_its_statements(
    engine: AsyncEngine, trips: list[Any]
) -> None:
    async with engine.connect():
        pass  # the pooled connection is open
    trips.clear()
    async with engine.begin() as connection:
        await connection.execute(sa.insert(ITEMS).values(name="a"))
    # BEGIN goes with the insert, then COMMIT; the pool's reset (a rollback) needs no trip
    assert len(trips) == 2
    trips.clear()
    async with engine.begin():
        pass
    assert trips == []  # nothing began, so nothing to commit
    async with engine.connect() as connection:
        assert (await connection.execute(sa.select(ITEMS.c.name))).scalars().all() == ["a"]


async def test_a_waiting_begin_takes_the_write_lock_with_the_first_statement(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with engine.connect() as connection:
        await connection.exec_driver_sql("PRAGMA busy_timeout=50")
        await connection.commit()
        blocker = sqlite3.connect(tmp_path / "driver.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            await connection.execute(sa.insert(ITEMS).values(name="blocked"))
        await connection.rollback()
        blocker.execute("INSERT INTO items (name) VALUES ('other')")
        blocker.execute("COMMIT")
        blocker.close()
        await connection.execute(sa.select(ITEMS.c.id))  # a read, yet the write lock is held now
        other = sqlite3.connect(tmp_path / "driver.db", isolation_level=None, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
        await connection.execute(sa.insert(ITEMS).values(name="after"))
        await connection.commit()
        names = (await connection.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).scalars().all()
    assert names == ["other", "after"]
