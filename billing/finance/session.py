"""Finance sessions: log in once with a ``finance`` or ``admin`` API key, then a cookie.

Each login is a row (``finance_sessions``); the cookie is a Fernet token (encrypted and
authenticated with a key derived from ``BILLING_SECRET_KEY`` for this purpose only) holding the
session's id and its CSRF token. Every request checks that the session has not ended and that
its key is still active, so logging out, or revoking the key, ends a session for good, even for
someone who copied the cookie. Forms carry the session's CSRF token; the login form, which has no session
yet, carries a token that must equal a short-lived cookie (double submit).
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from billing.core.context import AppContext
from billing.core.crypto import SecretBox, SecretDecryptionError
from billing.core.ids import new_id
from billing.finance.models import FinanceSession
from billing.tenants.models import ApiKey, Tenant
from billing.web.auth import FINANCE, KEY_PREFIX, Scope, hash_key

SESSION_COOKIE = "billing_finance"
LOGIN_COOKIE = "billing_finance_login"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
_PURPOSE = b"billing:finance-session:v1"


@dataclass(frozen=True)
class FinanceUser:
    session_id: str
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
    """A new session for an active finance or admin key; None for anything else."""
    key = plaintext_key.strip()
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    async with ctx.database.transaction() as session:
        row = (await session.execute(_KEYS.where(ApiKey.key_hash == hash_key(key)))).first()
        if row is None:
            return None
        started = FinanceSession(
            id=new_id("fses"), tenant_id=row.tenant_id, api_key_id=row.id, created_at=ctx.clock.now()
        )
        session.add(started)
    return _user(started.id, row, secrets.token_urlsafe(32))


async def log_out(ctx: AppContext, user: FinanceUser) -> None:
    async with ctx.database.transaction() as session:
        await session.execute(
            sa.update(FinanceSession)
            .where(FinanceSession.id == user.session_id, FinanceSession.ended_at.is_(None))
            .values(ended_at=ctx.clock.now())
        )


def session_cookie(ctx: AppContext, user: FinanceUser) -> str:
    data = {"s": user.session_id, "x": user.csrf_token}
    return _box(ctx).encrypt_at(json.dumps(data), ctx.clock.now())


async def current_user(ctx: AppContext, cookie: str | None) -> FinanceUser | None:
    data = _open(ctx, cookie, SESSION_SECONDS)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("s", "x")):
        return None
    query = _KEYS.join(FinanceSession, FinanceSession.api_key_id == ApiKey.id).where(
        FinanceSession.id == data["s"],
        FinanceSession.ended_at.is_(None),
        FinanceSession.created_at > ctx.clock.now() - timedelta(seconds=SESSION_SECONDS),
    )
    async with ctx.database.read() as session:
        row = (await session.execute(query)).first()
    return None if row is None else _user(data["s"], row, data["x"])


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


_KEYS = (
    sa.select(ApiKey.id, ApiKey.name, ApiKey.scope, ApiKey.tenant_id, Tenant.name.label("tenant_name"))
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.revoked_at.is_(None), ApiKey.scope.in_([scope.value for scope in FINANCE]))
)


def _user(session_id: str, row: sa.Row[str, str | None, str, str, str], csrf_token: str) -> FinanceUser:
    return FinanceUser(
        session_id, row.tenant_id, row.tenant_name, row.id, row.name, Scope(row.scope), csrf_token
    )
