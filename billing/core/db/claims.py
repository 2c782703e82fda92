"""Row claims: any replica leases due rows with a token and fences its outcome on it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.queries import rowcount
from billing.core.db.types import UTCDateTime


class ClaimMixin:
    """Columns that let any replica lease a row of work (see :func:`claim_rows`)."""

    claimed_by: Mapped[str | None] = mapped_column(sa.String(40))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


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
    return rowcount(result) == 1
