"""Portable inserts: insert-ignore on both dialects, and PostgreSQL's one-array-per-column bulk insert."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.types import Base


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
            default = column.default
            assert isinstance(default, sa.ColumnDefault)  # defaulted holds no other column
            values = [default.arg] * len(rows)
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
        sql += f" RETURNING {', '.join(quote(c.name) for c in returning)}"
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
    table = row.__table__
    primary_key = list(table.primary_key.columns)
    return bool(await insert_ignore(session, table, [column_values(row)], returning=primary_key))
