"""aiosqlite with one trip to the connection's thread per statement instead of four.

aiosqlite runs every call on the connection's own thread, and SQLAlchemy's adapter makes four
calls per statement: open a cursor, execute, fetch, close. Each trip hands the GIL over twice and
wakes the event loop through its self-pipe, which takes longer than a simple statement (about
60 µs of CPU on a 2-core VM). Here the statement is executed, fetched and closed in one trip,
and the cursor keeps what it returned (rows, description, rowcount, lastrowid) in the event
loop's thread. Rows are fetched whole, also for ``stream()``: nothing in the service streams a
result.

Transactions cost one trip more than their statements, not three: a ``BEGIN`` waits to run in
the trip of the transaction's first statement (nothing happens in between, so it takes its locks
at the same point of the work), and ending a transaction that never began, as the pool's reset
does after every commit, is no trip at all.
"""

from __future__ import annotations

import collections
import functools
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite


def connect(database: str, **kwargs: Any) -> Connection:
    """Like ``aiosqlite.connect``; SQLAlchemy awaits the result (``do_connect``'s ``async_creator_fn``)."""
    connection = Connection(functools.partial(sqlite3.connect, database, **kwargs), 64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: never block the exit
    return connection


_BEGIN = frozenset({"BEGIN", "BEGIN DEFERRED", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"})


class Connection(aiosqlite.Connection):
    # A BEGIN not run yet: the next statement's trip runs it first.
    _begin: str | None = None

    # Ignored override: aiosqlite's returns an awaitable that opens a cursor on the connection's
    # thread; this one returns the Cursor at once (no trip), which SQLAlchemy's adapter then enters.
    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    async def commit(self) -> None:
        await self._end(self._conn.commit)

    async def rollback(self) -> None:
        await self._end(self._conn.rollback)

    async def _end(self, end: Callable[[], None]) -> None:
        if self._begin is not None:
            self._begin = None  # nothing ran since BEGIN: nothing to end
        elif self._conn.in_transaction:
            await self._execute(end)

    def _defers(self, sql: str) -> bool:
        """Whether ``sql`` is a BEGIN that can wait for the next statement (and now waits)."""
        if sql not in _BEGIN or self._begin is not None or self._conn.in_transaction:
            return False  # anything else, or a BEGIN that fails: run now, as written
        self._begin = sql
        return True

    def _take_begin(self) -> str | None:
        begin, self._begin = self._begin, None
        return begin


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
        if self._connection._defers(sql):
            self.description, self.rowcount, self.lastrowid = None, -1, None
            return self
        begin = self._connection._take_begin()
        await self._connection._execute(self._run, begin, "execute", sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Any) -> Cursor:
        begin = self._connection._take_begin()
        await self._connection._execute(self._run, begin, "executemany", sql, seq_of_parameters)
        return self

    def _run(self, begin: str | None, method: str, sql: str, parameters: Any) -> None:
        """On the connection's thread: the pending BEGIN if any, then the whole statement, its
        rows fetched, its cursor closed."""
        if begin is not None:
            self._connection._conn.execute(begin).close()
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
