"""Alembic environment: async engines, one history for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection, text

from billing.core.db.engine import create_engine
from billing.core.db.types import ExactDecimal, UTCDateTime
from billing.core.settings import Settings
from billing.models import metadata

# Any number of replicas may run `billing migrate` at once on PostgreSQL: one migrates, the
# others wait on this lock and then find nothing to do.
MIGRATION_LOCK_ID = 7_204_117


def _database_url() -> str:
    url = context.config.attributes.get("database_url")
    return str(url) if url else Settings.from_env().database_url


def _render_item(kind: str, obj: Any, _autogen: Any) -> str | bool:
    # Migrations spell plain SQLAlchemy types, so that they never depend on the app's code.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, ExactDecimal):
        return "sa.Numeric().with_variant(sa.String(length=64), 'sqlite')"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
        # Our SQLite engine issues real BEGIN/COMMIT, so a failed migration leaves nothing behind.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_database_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=metadata, render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
