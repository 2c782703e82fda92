"""Database access shared by every domain: engines per dialect, sessions, insert-ignore and row claims."""

from __future__ import annotations

import asyncio
import functools
import traceback
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.util import await_

from billing import money, sqlite_driver
from billing.clock import assume_utc, ensure_utc

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITER_CACHE_KIB = 64 * 1024
WRITER_WAL_PAGES = 20_000  # 80 MB of 4 KiB pages
READ_ONLY = "billing_read_only"
# SQLSTATEs of a server that cannot be reached, is going away or is not up yet: class 08
# (connection exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
_DRIVER_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.")
M = TypeVar("M")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timestamps are UTC inside: aware on the way in, aware UTC on the way out, on both dialects."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not UTC:  # the common case needs no conversion
            value = ensure_utc(value)
        # SQLite stores text: a naive UTC value keeps one format, so text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else assume_utc(value)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class ExactDecimal(sa.types.TypeDecorator[Decimal]):
    """Exact decimals on both dialects: NUMERIC on PostgreSQL, canonical text on SQLite.

    SQLite has no exact decimal type (its NUMERIC is a float), so arithmetic on these columns
    goes through the aggregates of :func:`decimal_sum` / :func:`decimal_greatest`, which SQLite
    runs in Python, or through Python itself (``metering.event_store_sqlite`` merges rollups).
    """

    impl = sa.Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(64))
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: sa.Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return format(value, "f")  # exact plain notation; the text need not be canonical

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(value)


def decimal_sum(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Exact ``SUM`` (SQLite's own sum of text is a float)."""
    if dialect == "sqlite":
        return sa.func.dec_sum(column, type_=ExactDecimal())
    return sa.func.sum(column, type_=ExactDecimal())


def decimal_greatest(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Exact ``MAX`` (SQLite's own max compares text)."""
    if dialect == "sqlite":
        return sa.func.dec_greatest(column, type_=ExactDecimal())
    return sa.func.max(column, type_=ExactDecimal())


class _SqliteDecSum:
    """SQLite calls ``step`` once per row: it only keeps the text, and ``finalize`` adds them up."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.step = self.values.append  # a bound C method: no Python frame per row

    def finalize(self) -> str | None:
        values = [value for value in self.values if value is not None]
        return format(money.exact_sum(map(Decimal, values)), "f") if values else None


class _SqliteDecGreatest:
    def __init__(self) -> None:
        self.best: str | None = None

    def step(self, value: str | None) -> None:
        self.best = _sqlite_dec_max(self.best, value)

    def finalize(self) -> str | None:
        return self.best


def _sqlite_dec_max(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a if b is None else b
    return a if Decimal(a) >= Decimal(b) else b


class ClaimMixin:
    """Columns that let any replica lease a row of work (see :func:`claim_rows`)."""

    claimed_by: Mapped[str | None] = mapped_column(sa.String(40))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


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
        _create_sqlite_aggregate(dbapi_connection, "dec_sum", _SqliteDecSum)
        _create_sqlite_aggregate(dbapi_connection, "dec_greatest", _SqliteDecGreatest)

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


def any_of(column: sa.ColumnElement[Any], values: Sequence[Any], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one statement whatever the
    number of values, where an IN list is rendered, and prepared by asyncpg, once per length."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


async def insert_ignore(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    returning: Sequence[sa.ColumnElement[Any]] = (),
) -> list[sa.Row[Any]]:
    """Insert rows, skipping any that violate a unique constraint; return the inserted ones
    (their ``returning`` columns; nothing when no columns are asked for).

    ON CONFLICT DO NOTHING on both dialects: the constraint decides, never a lookup first.
    """
    if not rows:
        return []
    if _unnest_fits(session, table, rows, returning):
        return await _insert_unnest(session, table, rows, "ON CONFLICT DO NOTHING", returning)
    stmt = _insert_ignore_statement(session.get_bind().dialect.name, table, tuple(returning))
    if not returning:
        await session.execute(stmt, list(rows))
        return []
    result = await session.execute(stmt, list(rows))
    return list(result.all())


@functools.lru_cache(maxsize=256)
def _insert_ignore_statement(dialect: str, table: sa.Table, returning: tuple[Any, ...]) -> Any:
    """Built once per table (statements are immutable): many callers insert one row at a time."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).on_conflict_do_nothing()
    return stmt.returning(*returning) if returning else stmt


async def insert_rows(session: AsyncSession, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows in batched multi-row VALUES statements (SQLAlchemy's "insertmanyvalues",
    which RETURNING turns on): asyncpg's plain executemany runs every row on its own."""
    if not rows:
        return
    if _unnest_fits(session, table, rows):
        await _insert_unnest(session, table, rows, "", ())
        return
    await session.execute(sa.insert(table).returning(*table.primary_key.columns), list(rows))


# From this many rows on, PostgreSQL inserts take one array per column (see _insert_unnest).
UNNEST_MIN_ROWS = 20


def _unnest_fits(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[sa.ColumnElement[Any]] = (),
) -> bool:
    """Whether ``_insert_unnest`` can write these rows as SQLAlchemy would: on PostgreSQL, enough
    rows with the same keys, no Python-side default but plain values, and returned columns that
    need no conversion on the way out."""
    dialect = session.get_bind().dialect
    if len(rows) < UNNEST_MIN_ROWS or dialect.name != "postgresql":
        return False
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        return False
    defaults = [c.default for c in table.columns if c.key not in keys and c.default is not None]
    if not all(isinstance(default, sa.ColumnDefault) and default.is_scalar for default in defaults):
        return False
    return all(
        column.type.dialect_impl(dialect).result_processor(dialect, None) is None for column in returning
    )


async def _insert_unnest(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    on_conflict: str,
    returning: Sequence[sa.ColumnElement[Any]],
) -> list[sa.Row[Any]]:
    """``INSERT ... SELECT * FROM unnest($1, $2, ...)``: one array per column, each value bound by
    its column type's own processor. SQLAlchemy's multi-row VALUES binds every value on its own,
    which for thousands of rows costs more than the database takes to insert them."""
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    given = [table.c[key] for key in rows[0]]
    defaulted = [c for c in table.columns if c.key not in rows[0] and isinstance(c.default, sa.ColumnDefault)]
    columns = given + defaulted
    arrays, casts = [], []
    for n, column in enumerate(columns, start=1):
        impl = column.type.dialect_impl(dialect)
        process = impl.bind_processor(dialect)
        if column.key in rows[0]:
            values = [row[column.key] for row in rows]
        else:  # a scalar default (_unnest_fits)
            values = [column.default.arg] * len(rows)  # type: ignore[union-attr]
        arrays.append(values if process is None else [process(value) for value in values])
        type_name = impl.compile(dialect=dialect)
        if isinstance(impl, sa.JSON):  # bound as JSON text
            casts.append(f"CAST(CAST(${n} AS text[]) AS {type_name}[])")
        else:
            casts.append(f"CAST(${n} AS {type_name}[])")
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "  # noqa: S608
        f"SELECT * FROM unnest({', '.join(casts)}) {on_conflict}"
    )
    if returning:
        sql += f" RETURNING {', '.join(quote(c.name) for c in returning)}"  # type: ignore[attr-defined]
    connection = await session.connection()
    result = await connection.exec_driver_sql(sql, tuple(arrays))
    return list(result.all()) if returning else []


def column_values(row: Base) -> dict[str, Any]:
    """The row's column values keyed by column key, for Core inserts of a transient object."""
    return {
        column.key: getattr(row, attr.key)
        for attr in sa.inspect(type(row)).column_attrs
        for column in attr.columns
    }


async def insert_row_ignore(session: AsyncSession, row: Base) -> bool:
    """Insert a new ORM object unless a unique constraint already holds its key; tell which."""
    table: sa.Table = row.__table__  # type: ignore[assignment]
    primary_key = list(table.primary_key.columns)
    return bool(await insert_ignore(session, table, [column_values(row)], returning=primary_key))


async def find_by_id_or_key(
    session: AsyncSession, model: type[M], tenant_id: str, key: sa.ColumnElement[str], ref: str
) -> M | None:
    """The tenant's row whose id or natural key (external_id, meter key...) is ``ref``; the id wins."""
    id_column: Any = model.id  # type: ignore[attr-defined]
    tenant_column: Any = model.tenant_id  # type: ignore[attr-defined]
    query = (
        sa.select(model)
        .where(tenant_column == tenant_id, sa.or_(id_column == ref, key == ref))
        .order_by(sa.case((id_column == ref, 0), else_=1))
        .limit(1)
    )
    return (await session.scalars(query)).first()


def new_claim_token() -> str:
    return f"clm_{uuid.uuid4().hex}"


async def claim_rows(
    session: AsyncSession,
    table: sa.Table,
    *,
    due: sa.ColumnElement[bool],
    order_by: Sequence[sa.ColumnElement[Any]],
    limit: int,
    now: datetime,
    lease: timedelta,
    token: str | None = None,
) -> tuple[str, list[sa.Row[Any]]]:
    """Lease up to ``limit`` due rows that no live claim holds, and return the claim token with them.

    PostgreSQL skips rows locked by a concurrent claimer (FOR UPDATE SKIP LOCKED); on SQLite the
    write lock serialises claimers and the repeated lease test makes the UPDATE a compare-and-set.
    Commit promptly: the lease, not the transaction, protects the work that follows.
    """
    token = token or new_claim_token()
    free = sa.or_(table.c.claim_expires_at.is_(None), table.c.claim_expires_at <= now)
    candidates = (
        sa.select(table.c.id)
        .where(due, free)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(table)
        .where(table.c.id.in_(candidates), free)
        .values(claimed_by=token, claim_expires_at=now + lease)
        .returning(*table.c)
    )
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return token, list(result.all())


async def finish_claim(
    session: AsyncSession, table: sa.Table, row_id: str, token: str, **values: Any
) -> bool:
    """Write the outcome of claimed work only if the claim is still ours; release it."""
    stmt = (
        sa.update(table)
        .where(table.c.id == row_id, table.c.claimed_by == token)
        .values(claimed_by=None, claim_expires_at=None, **values)
    )
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
