"""aiosqlite with one trip to the connection's thread per statement instead of four.

aiosqlite runs every call on the connection's own thread, and SQLAlchemy's adapter makes four
calls per statement: open a cursor, execute, fetch, close. Each trip hands the GIL over twice and
wakes the event loop through its self-pipe, which takes about as long as a simple statement.
Here the statement is executed, fetched and closed in one trip, and the cursor keeps what it
returned (rows, description, rowcount, lastrowid) in the event loop's thread. Rows are
fetched whole, also for ``stream()``: nothing in the service streams a result.
"""

from __future__ import annotations

import collections
import functools
import sqlite3
from typing import Any

import aiosqlite


def connect(database: str, **kwargs: Any) -> Connection:
    """Like ``aiosqlite.connect``; SQLAlchemy awaits the result (``do_connect``'s ``async_creator_fn``)."""
    connection = Connection(functools.partial(sqlite3.connect, database, **kwargs), 64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: never block the exit
    return connection


class Connection(aiosqlite.Connection):
    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)


class Cursor:
    """The parts of an aiosqlite cursor that SQLAlchemy's adapter uses."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: collections.deque[Any] = collections.deque()

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        await self._connection._execute(self._run, "execute", sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Any) -> Cursor:
        await self._connection._execute(self._run, "executemany", sql, seq_of_parameters)
        return self

    def _run(self, method: str, sql: str, parameters: Any) -> None:
        """On the connection's thread: the whole statement, its rows fetched, its cursor closed."""
        cursor = self._connection._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            rows = cursor.fetchall() if cursor.description else []
            self.description, self.rowcount, self.lastrowid = (
                cursor.description,
                cursor.rowcount,
                cursor.lastrowid,
            )
        finally:
            cursor.close()
        self._rows = collections.deque(rows)

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()
