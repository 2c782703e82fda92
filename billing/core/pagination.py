"""Cursor pagination shared by every list: ``?limit=`` (1..100) and ``?starting_after=<id>``.

Lists are newest first; ids grow with creation time, so ``id < starting_after`` is the next page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import msgspec
import sqlalchemy as sa
from litestar.params import QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Page size (1..100)")]
StartingAfter = Annotated[
    str | None, QueryParameter(max_length=64, description="Id of the last item of the previous page")
]


class Page(msgspec.Struct, Generic[T]):
    data: list[T]
    has_more: bool


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None


async def fetch_page(
    session: AsyncSession, stmt: sa.Select[Any], id_column: sa.SQLColumnExpression[str], page: PageRequest
) -> tuple[list[Any], bool]:
    """Run ``stmt`` for one page; the caller's filters (tenant first) are already in it."""
    if page.starting_after is not None:
        stmt = stmt.where(id_column < page.starting_after)
    rows = list((await session.scalars(stmt.order_by(id_column.desc()).limit(page.limit + 1))).all())
    return rows[: page.limit], len(rows) > page.limit
