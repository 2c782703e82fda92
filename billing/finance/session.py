"""Finance sessions: log in once with a ``finance`` or ``admin`` API key, then a cookie.

The cookie is a Fernet token (encrypted and authenticated with a key derived from
``BILLING_SECRET_KEY`` for this purpose only) holding the key's id, its tenant and the session's
CSRF token. Every request checks again that the key is still active, so revoking a key ends its
sessions at once. Forms carry the session's CSRF token; the login form, which has no session
yet, carries a token that must equal a short-lived cookie (double submit).
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from billing.auth import FINANCE, KEY_PREFIX, Scope, hash_key
from billing.context import AppContext
from billing.crypto import SecretBox, SecretDecryptionError
from billing.tenants.models import ApiKey, Tenant

SESSION_COOKIE = "billing_finance"
LOGIN_COOKIE = "billing_finance_login"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
_PURPOSE = b"billing:finance-session:v1"


@dataclass(frozen=True)
class FinanceUser:
    tenant_id: str
    tenant_name: str
    key_id: str
    key_name: str | None
    scope: Scope
    csrf_token: str

    @property
    def actor(self) -> str:
        return self.key_id


def _box(ctx: AppContext) -> SecretBox:
    return _box_for(tuple(ctx.settings.secret_keys))


@functools.cache
def _box_for(secret_keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(secret_keys, purpose=_PURPOSE)


async def log_in(ctx: AppContext, plaintext_key: str) -> FinanceUser | None:
    """The session for an active finance or admin key; None for anything else."""
    key = plaintext_key.strip()
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    return await _load(ctx, ApiKey.key_hash == hash_key(key), csrf_token=secrets.token_urlsafe(32))


def session_cookie(ctx: AppContext, user: FinanceUser) -> str:
    data = {"k": user.key_id, "t": user.tenant_id, "x": user.csrf_token}
    return _box(ctx).encrypt_at(json.dumps(data), ctx.clock.now())


async def current_user(ctx: AppContext, cookie: str | None) -> FinanceUser | None:
    data = _open(ctx, cookie, SESSION_SECONDS)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("k", "t", "x")):
        return None
    user = await _load(ctx, ApiKey.id == data["k"], csrf_token=data["x"])
    return user if user is not None and user.tenant_id == data["t"] else None


def login_token(ctx: AppContext) -> tuple[str, str]:
    """A fresh (form token, cookie value) pair for the login form."""
    token = secrets.token_urlsafe(32)
    return token, _box(ctx).encrypt_at(json.dumps({"l": token}), ctx.clock.now())


def login_token_matches(ctx: AppContext, cookie: str | None, submitted: str | None) -> bool:
    data = _open(ctx, cookie, LOGIN_FORM_SECONDS)
    expected = data.get("l") if isinstance(data, dict) else None
    return isinstance(expected, str) and same_token(expected, submitted)


def same_token(expected: str, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(expected.encode(), submitted.encode())


def _open(ctx: AppContext, token: str | None, max_age_seconds: int) -> Any:
    if not token or len(token) > 4096:
        return None
    try:
        return json.loads(_box(ctx).decrypt_fresh(token, at=ctx.clock.now(), max_age_seconds=max_age_seconds))
    except (SecretDecryptionError, ValueError):
        return None


async def _load(ctx: AppContext, which: sa.ColumnElement[bool], *, csrf_token: str) -> FinanceUser | None:
    query = (
        sa.select(ApiKey.id, ApiKey.name, ApiKey.scope, ApiKey.tenant_id, Tenant.name.label("tenant_name"))
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(which, ApiKey.revoked_at.is_(None))
    )
    async with ctx.database.read() as session:
        row = (await session.execute(query)).first()
    if row is None or Scope(row.scope) not in FINANCE:
        return None
    return FinanceUser(row.tenant_id, row.tenant_name, row.id, row.name, Scope(row.scope), csrf_token)
