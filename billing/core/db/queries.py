"""Portable SQL: exact decimal sums and maxima on both dialects, ``= ANY(array)``, lookups by id or key."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from billing.core import money
from billing.core.db.types import ExactDecimal


class _TenantRow(Protocol):
    """A model with ``id`` and ``tenant_id`` columns (mapped attributes, read on the class)."""

    id: ClassVar[InstrumentedAttribute[str]]
    tenant_id: ClassVar[InstrumentedAttribute[str]]


M = TypeVar("M", bound=_TenantRow)


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


class SqliteDecSum:
    """SQLite calls ``step`` once per row: it only keeps the text, and ``finalize`` adds them up."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.step = self.values.append  # a bound C method: no Python frame per row

    def finalize(self) -> str | None:
        values = [value for value in self.values if value is not None]
        return format(money.exact_sum(map(Decimal, values)), "f") if values else None


class SqliteDecGreatest:
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


def any_of(column: sa.ColumnElement[Any], values: Sequence[Any], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one statement whatever the
    number of values, where an IN list is rendered, and prepared by asyncpg, once per length."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


async def find_by_id_or_key(
    session: AsyncSession, model: type[M], tenant_id: str, key: sa.SQLColumnExpression[str], ref: str
) -> M | None:
    """The tenant's row whose id or natural key (external_id, meter key...) is ``ref``; the id wins."""
    id_column, tenant_column = model.id, model.tenant_id
    query = (
        sa.select(model)
        .where(tenant_column == tenant_id, sa.or_(id_column == ref, key == ref))
        .order_by(sa.case((id_column == ref, 0), else_=1))
        .limit(1)
    )
    return (await session.scalars(query)).first()


def rowcount(result: sa.Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE matched. ``Session.execute`` types every result as a plain
    ``Result``; for these statements it is a ``CursorResult``, which has the count."""
    if not isinstance(result, sa.CursorResult):
        raise TypeError(f"{type(result).__name__} has no row count")
    return result.rowcount
