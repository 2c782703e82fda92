"""The development tenant that ``make run`` creates once and then reuses.

Its admin key is kept in plain text in the data dir (mode 0600) so that every ``make run``
can print it again; production never does this.
"""

from __future__ import annotations

import json
import os
from typing import Any

import sqlalchemy as sa

from billing.core.context import AppContext
from billing.tenants import service
from billing.tenants.models import ApiKey
from billing.web.auth import Scope, hash_key

DEV_TENANT_FILE = "dev-tenant.json"


async def ensure(ctx: AppContext) -> dict[str, Any]:
    path = ctx.settings.data_dir / DEV_TENANT_FILE
    if path.exists():
        info: dict[str, Any] = json.loads(path.read_text())
        if await _key_works(ctx, info["api_key"]):
            return info
    async with ctx.database.transaction() as session:
        now = ctx.clock.now()
        tenant = await service.create_tenant(session, name="Development", currency="USD", now=now)
        key, plaintext = await service.create_api_key(
            session, tenant_id=tenant.id, scope=Scope.ADMIN, name="development admin", now=now
        )
    info = {"tenant_id": tenant.id, "api_key_id": key.id, "api_key": plaintext}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle)
    return info


async def _key_works(ctx: AppContext, plaintext: str) -> bool:
    async with ctx.database.read() as session:
        found = await session.scalar(
            sa.select(ApiKey.id).where(ApiKey.key_hash == hash_key(plaintext), ApiKey.revoked_at.is_(None))
        )
    return found is not None


def banner(info: dict[str, Any]) -> str:
    return "\n".join(
        [
            "Development tenant ready",
            f"  tenant:    {info['tenant_id']}",
            f"  admin key: {info['api_key']}",
            "  try:      curl -H 'Authorization: Bearer <admin key>' http://127.0.0.1:8000/v1/tenant",
            "  API docs: http://127.0.0.1:8000/schema/docs",
        ]
    )
