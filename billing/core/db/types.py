"""Declarative base and column types shared by every model: UTC timestamps, exact decimals, JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase

from billing.core.clock import assume_utc, ensure_utc

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # Every model declares a __tablename__, so each is mapped to a Table (SQLAlchemy types
        # __table__ as any FromClause, which a class mapped to a subquery would have).
        __table__: ClassVar[sa.Table]


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


def one_of(column: str, values: tuple[str, ...]) -> str:
    """The text of a CHECK constraint that ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"
