"""Webhook endpoints: create, read, change, delete, rotate the secret. Secrets are encrypted at rest
and shown once."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from msgspec import UnsetType
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.crypto import SecretBox
from billing.core.errors import Conflict, NotFound
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.webhooks import signing
from billing.webhooks.models import WebhookEndpoint
from billing.webhooks.schemas import EndpointCreate, EndpointPatch
from billing.webhooks.targets import check_url

MAX_ENDPOINTS = 20
DISABLED_BY_TENANT = "disabled by the tenant"


def _events(values: list[str]) -> list[str]:
    return sorted(set(values))


async def create_endpoint(
    session: AsyncSession,
    tenant_id: str,
    data: EndpointCreate,
    *,
    box: SecretBox,
    now: datetime,
    production: bool,
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret in plain text (to show once)."""
    url = check_url("url", data.url, production=production)
    count = await session.scalar(
        sa.select(sa.func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    )
    if (count or 0) >= MAX_ENDPOINTS:
        raise Conflict(f"A tenant has at most {MAX_ENDPOINTS} webhook endpoints", code="too_many_endpoints")
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        id=new_id("whe"),
        tenant_id=tenant_id,
        url=url,
        description=data.description,
        events=_events(list(data.events)),
        enabled=data.enabled,
        secret=box.encrypt(secret),
        disabled_at=None if data.enabled else now,
        disabled_reason=None if data.enabled else DISABLED_BY_TENANT,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


async def get_endpoint(
    session: AsyncSession, tenant_id: str, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    query = sa.select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id
    )
    endpoint = (await session.scalars(query.with_for_update() if lock else query)).first()
    if endpoint is None:
        raise NotFound(f"No webhook endpoint {endpoint_id}")
    return endpoint


async def list_endpoints(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[WebhookEndpoint], bool]:
    query = sa.select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return await fetch_page(session, query, WebhookEndpoint.id, page)


async def delete_endpoint(session: AsyncSession, tenant_id: str, endpoint_id: str) -> None:
    """The endpoint and its delivery log."""
    await session.delete(await get_endpoint(session, tenant_id, endpoint_id, lock=True))


def update_endpoint(
    endpoint: WebhookEndpoint, patch: EndpointPatch, *, now: datetime, production: bool
) -> None:
    if not isinstance(patch.url, UnsetType):
        endpoint.url = check_url("url", patch.url, production=production)
    if not isinstance(patch.events, UnsetType):
        endpoint.events = _events(list(patch.events))
    if not isinstance(patch.description, UnsetType):
        endpoint.description = patch.description
    if not isinstance(patch.enabled, UnsetType) and patch.enabled != endpoint.enabled:
        set_enabled(endpoint, patch.enabled, now=now, reason=DISABLED_BY_TENANT)
    endpoint.updated_at = now


def set_enabled(endpoint: WebhookEndpoint, enabled: bool, *, now: datetime, reason: str) -> None:
    endpoint.enabled = enabled
    endpoint.disabled_at = None if enabled else now
    endpoint.disabled_reason = None if enabled else reason
    if enabled:
        endpoint.failing_since = None  # a fresh start: three new days before it is disabled again


def rotate_secret(
    endpoint: WebhookEndpoint, *, box: SecretBox, now: datetime, keep_previous: timedelta
) -> str:
    """A new secret; the current one keeps signing beside it for ``keep_previous``."""
    secret = signing.new_secret()
    if keep_previous > timedelta(0):
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + keep_previous
    else:
        endpoint.previous_secret = endpoint.previous_secret_expires_at = None
    endpoint.secret = box.encrypt(secret)
    endpoint.updated_at = now
    return secret


def signing_secrets(endpoint: WebhookEndpoint, *, box: SecretBox, at: datetime) -> list[str]:
    """The secrets that sign a request sent at ``at``: the current one, and the previous while valid."""
    found = [box.decrypt(endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and at < expires:
        found.append(box.decrypt(endpoint.previous_secret))
    return found
