"""``/v1/webhook-endpoints``: create (secret shown once, stored encrypted), URL rules, list, get,
update, enable and disable, delete, rotate the secret, and scopes."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.web.auth import Scope
from billing.webhooks.endpoints import MAX_ENDPOINTS
from billing.webhooks.models import WebhookEndpoint
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

URL = "https://hooks.example.com/billing"
PATH = "/v1/webhook-endpoints"


async def create(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict | None = None, status: int = 201
) -> dict:
    payload = {"url": URL, "events": ["invoice.paid", "invoice.payment_failed"]} | (body or {})
    response = await client.post(PATH, headers=tenant.headers(), json=payload)
    assert response.status_code == status, response.text
    return response.json()


async def stored(ctx: AppContext, endpoint_id: str) -> WebhookEndpoint:
    async with ctx.database.read() as session:
        return await session.get_one(WebhookEndpoint, endpoint_id)


async def test_create_shows_the_secret_once_and_stores_it_encrypted(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    endpoint = await create(
        client, tenant, {"description": "CRM", "events": ["invoice.paid", "invoice.created"]}
    )
    assert endpoint["id"].startswith("whe_") and endpoint["object"] == "webhook_endpoint"
    assert endpoint["url"] == URL and endpoint["description"] == "CRM"
    assert endpoint["events"] == ["invoice.created", "invoice.paid"]
    assert endpoint["enabled"] is True and endpoint["disabled_at"] is None
    assert endpoint["created_at"] == "2026-11-21T12:00:00Z"
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")

    row = await stored(ctx, endpoint["id"])
    assert secret not in row.secret and ctx.box.decrypt(row.secret) == secret

    fetched = (await client.get(f"{PATH}/{endpoint['id']}", headers=tenant.headers())).json()
    listed = (await client.get(PATH, headers=tenant.headers())).json()
    assert "secret" not in fetched and fetched == {k: v for k, v in endpoint.items() if k != "secret"}
    assert listed == {"data": [fetched], "has_more": False}
    assert secret not in (await client.get(PATH, headers=tenant.headers(Scope.FINANCE))).text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.com/"}, "url"),
        ({"url": "ftp://127.0.0.1/"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"events": []}, "events"),
        ({"events": ["invoice.exploded"]}, "events"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_invalid_endpoints_are_422(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict, field: str
) -> None:
    payload = {"url": URL, "events": ["invoice.paid"]} | body
    problem = assert_problem(
        await client.post(PATH, headers=tenant.headers(), json=payload), 422, "validation_error"
    )
    assert problem["errors"][0]["field"].startswith(field)


async def test_loopback_http_is_accepted_outside_production_only(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await create(client, tenant, {"url": "http://127.0.0.1:9000/hooks"})
    await create(client, tenant, {"url": "https://10.0.0.5/hooks"})
    ctx.settings = dataclasses.replace(ctx.settings, env="production")
    for url in (
        "http://127.0.0.1:9000/hooks",
        "https://10.0.0.5/hooks",
        "https://169.254.169.254/",
        URL.replace("https", "http"),
    ):
        response = await client.post(PATH, headers=tenant.headers(), json={"url": url, "events": ["*"]})
        assert_problem(response, 422, "validation_error")
    await create(client, tenant)
    endpoint = await create(client, tenant)
    response = await client.patch(
        f"{PATH}/{endpoint['id']}", headers=tenant.headers(), json={"url": "https://localhost/"}
    )
    assert_problem(response, 422, "validation_error")


async def test_update_events_url_description_and_enabled(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    endpoint = await create(client, tenant)
    url = f"{PATH}/{endpoint['id']}"
    clock.advance(timedelta(minutes=5))
    body = {"events": ["*"], "url": "https://other.example.com/x", "description": "new"}
    changed = (await client.patch(url, headers=tenant.headers(), json=body)).json()
    assert changed["events"] == ["*"] and changed["url"] == "https://other.example.com/x"
    assert changed["description"] == "new" and changed["updated_at"] == "2026-11-21T12:05:00Z"

    disabled = (await client.patch(url, headers=tenant.headers(), json={"enabled": False})).json()
    assert disabled["enabled"] is False and disabled["disabled_at"] == "2026-11-21T12:05:00Z"
    assert disabled["disabled_reason"] == "disabled by the tenant"
    enabled = (await client.patch(url, headers=tenant.headers(), json={"enabled": True})).json()
    assert (
        enabled["enabled"] is True and enabled["disabled_at"] is None and enabled["disabled_reason"] is None
    )
    unchanged = (await client.patch(url, headers=tenant.headers(), json={})).json()
    assert unchanged["events"] == ["*"] and unchanged["enabled"] is True
    assert_problem(
        await client.patch(url, headers=tenant.headers(), json={"events": []}), 422, "validation_error"
    )


async def test_delete_removes_the_endpoint(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    endpoint = await create(client, tenant)
    url = f"{PATH}/{endpoint['id']}"
    assert (await client.delete(url, headers=tenant.headers())).status_code == 204
    assert_problem(await client.get(url, headers=tenant.headers()), 404, "not_found")
    assert_problem(await client.delete(url, headers=tenant.headers()), 404, "not_found")


async def test_rotate_secret_returns_a_new_secret_and_keeps_the_old_one_for_a_while(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    endpoint = await create(client, tenant)
    url = f"{PATH}/{endpoint['id']}/rotate-secret"
    rotated = await client.post(url, headers=tenant.headers())
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    row = await stored(ctx, endpoint["id"])
    assert ctx.box.decrypt(row.secret) == new_secret
    assert row.previous_secret is not None and ctx.box.decrypt(row.previous_secret) == endpoint["secret"]
    assert row.previous_secret_expires_at == ctx.clock.now() + timedelta(hours=24)

    again = await client.post(url, headers=tenant.headers(), json={"expire_previous_in_seconds": 0})
    row = await stored(ctx, endpoint["id"])
    assert ctx.box.decrypt(row.secret) == again.json()["secret"] and row.previous_secret is None
    bad = await client.post(url, headers=tenant.headers(), json={"expire_previous_in_seconds": 90_000})
    assert_problem(bad, 422, "validation_error")


async def test_scopes(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    endpoint = await create(client, tenant)
    url = f"{PATH}/{endpoint['id']}"
    finance, ingest = tenant.headers(Scope.FINANCE), tenant.headers(Scope.INGEST)
    assert (await client.get(PATH, headers=finance)).status_code == 200
    assert (await client.get(f"{url}/deliveries", headers=finance)).status_code == 200
    body = {"url": URL, "events": ["invoice.paid"]}
    assert_problem(await client.post(PATH, headers=finance, json=body), 403, "forbidden")
    assert_problem(await client.patch(url, headers=finance, json={"enabled": False}), 403, "forbidden")
    assert_problem(await client.delete(url, headers=finance), 403, "forbidden")
    assert_problem(await client.post(f"{url}/rotate-secret", headers=finance), 403, "forbidden")
    assert_problem(await client.get(PATH, headers=ingest), 403, "forbidden")


async def test_list_pages_and_the_endpoint_limit(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
    ctx: AppContext,
) -> None:
    ids = [(await create(client, tenant))["id"] for _ in range(MAX_ENDPOINTS)]
    assert_problem(
        await client.post(PATH, headers=tenant.headers(), json={"url": URL, "events": ["*"]}),
        409,
        "too_many_endpoints",
    )
    first = (await client.get(PATH, headers=tenant.headers(), params={"limit": 15})).json()
    assert first["has_more"] is True and [e["id"] for e in first["data"]] == ids[::-1][:15]
    params = {"limit": 15, "starting_after": first["data"][-1]["id"]}
    second = (await client.get(PATH, headers=tenant.headers(), params=params)).json()
    assert second["has_more"] is False and [e["id"] for e in second["data"]] == ids[::-1][15:]
    other = await make_tenant(name="Other")
    assert (await client.get(PATH, headers=other.headers())).json() == {"data": [], "has_more": False}
    async with ctx.database.read() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == MAX_ENDPOINTS
