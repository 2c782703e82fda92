"""API keys and scopes: 401 without a valid key, 403 for the wrong scope, problem details always."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.tenants.models import ApiKey
from billing.web.auth import Scope
from tests.conftest import TenantHandle

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"] and body["detail"] and body["type"].endswith(code)
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer bk_unknownkeyunknownkeyunknownkey"},
        {"Authorization": "Bearer sk_live_notours"},
    ],
    ids=["missing", "empty", "basic", "unknown", "foreign-format"],
)
async def test_a_request_without_a_valid_key_answers_401(client: httpx.AsyncClient, headers: dict) -> None:
    response = await client.get("/v1/tenant", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_stops_working_at_once(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    finance = tenant.headers(Scope.FINANCE)
    assert (await client.get("/v1/tenant", headers=finance)).status_code == 200

    revoked = await client.post(
        f"/v1/api-keys/{tenant.key_ids[Scope.FINANCE]}/revoke", headers=tenant.headers()
    )
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    assert_problem(await client.get("/v1/tenant", headers=finance), 401, "unauthorized")


@pytest.mark.parametrize(
    ("scope", "method", "path", "allowed"),
    [
        (Scope.ADMIN, "GET", "/v1/tenant", True),
        (Scope.FINANCE, "GET", "/v1/tenant", True),
        (Scope.INGEST, "GET", "/v1/tenant", False),
        (Scope.ADMIN, "PATCH", "/v1/tenant", True),
        (Scope.FINANCE, "PATCH", "/v1/tenant", False),
        (Scope.INGEST, "PATCH", "/v1/tenant", False),
        (Scope.FINANCE, "GET", "/v1/api-keys", False),
        (Scope.FINANCE, "POST", "/v1/api-keys", False),
        (Scope.INGEST, "POST", "/v1/api-keys", False),
    ],
)
async def test_each_scope_reaches_only_its_operations(
    client: httpx.AsyncClient, tenant: TenantHandle, scope: Scope, method: str, path: str, allowed: bool
) -> None:
    body = {"name": "Renamed"} if method == "PATCH" else {"scope": "ingest"} if method == "POST" else None
    response = await client.request(method, path, headers=tenant.headers(scope), json=body)
    if allowed:
        assert response.status_code in (200, 201), response.text
    else:
        assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("scope", "method", "path"),
    [(Scope.FINANCE, "POST", "/v1/billing/run"), (Scope.INGEST, "GET", "/v1/tenant")],
)
async def test_a_forbidden_request_names_the_keys_scope(
    client: httpx.AsyncClient, tenant: TenantHandle, scope: Scope, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=tenant.headers(scope), json={})
    body = assert_problem(response, 403, "forbidden")
    assert body["detail"] == f"A key with scope {scope.value} may not call this operation"


async def test_a_forbidden_request_changes_nothing(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    response = await client.patch(
        "/v1/tenant", headers=tenant.headers(Scope.FINANCE), json={"name": "Hijacked"}
    )
    assert_problem(response, 403, "forbidden")
    assert (await client.get("/v1/tenant", headers=tenant.headers())).json()["name"] == "Acme"


async def test_a_created_key_is_shown_once_and_stored_as_a_hash(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    created = await client.post(
        "/v1/api-keys", headers=tenant.headers(), json={"scope": "ingest", "name": "etl"}
    )
    assert created.status_code == 201
    body = created.json()
    plaintext = body["key"]
    assert plaintext.startswith("bk_") and body["prefix"] == plaintext[:11]

    listed = await client.get("/v1/api-keys", headers=tenant.headers())
    assert plaintext not in listed.text
    assert body["id"] in {item["id"] for item in listed.json()["data"]}
    fetched = await client.get(f"/v1/api-keys/{body['id']}", headers=tenant.headers())
    assert "key" not in fetched.json()

    async with ctx.database.read() as session:
        stored = (await session.execute(sa.select(ApiKey).where(ApiKey.id == body["id"]))).scalar_one()
    assert stored.key_hash != plaintext and plaintext not in stored.key_hash
    ingest = {"Authorization": f"Bearer {plaintext}"}
    assert_problem(await client.get("/v1/tenant", headers=ingest), 403, "forbidden")


async def test_api_keys_page_with_starting_after(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    for _ in range(3):
        assert (
            await client.post("/v1/api-keys", headers=tenant.headers(), json={"scope": "ingest"})
        ).status_code == 201
    first = (await client.get("/v1/api-keys?limit=4", headers=tenant.headers())).json()
    assert len(first["data"]) == 4 and first["has_more"] is True
    rest = (
        await client.get(
            f"/v1/api-keys?limit=4&starting_after={first['data'][-1]['id']}", headers=tenant.headers()
        )
    ).json()
    assert rest["has_more"] is False
    ids = [k["id"] for k in first["data"] + rest["data"]]
    assert len(ids) == len(set(ids)) == 6  # three per scope from the fixture, three created here
    assert ids == sorted(ids, reverse=True)


@pytest.mark.parametrize("limit", ["0", "101", "abc"])
async def test_a_limit_out_of_range_answers_422(
    client: httpx.AsyncClient, tenant: TenantHandle, limit: str
) -> None:
    response = await client.get(f"/v1/api-keys?limit={limit}", headers=tenant.headers())
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/tenant", "GET, OPTIONS, PATCH"),
        ("/v1/customers", "GET, OPTIONS, POST"),
        ("/v1/customers/acme-42", "DELETE, GET, OPTIONS, PATCH"),
        ("/v1/invoices/export.csv", "GET, OPTIONS"),
        ("/v1/invoices/inv_unknown/void", "OPTIONS, POST"),
        ("/v1/billing/run", "OPTIONS, POST"),
        ("/v1/webhook-endpoints/whe_unknown", "DELETE, GET, OPTIONS, PATCH"),
    ],
)
@pytest.mark.parametrize("key", ["none", "admin", "ingest", "unknown"])
async def test_options_answers_204_with_the_routes_methods_with_or_without_a_key(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, allow: str, key: str
) -> None:
    headers = {
        "none": {},
        "admin": tenant.headers(),
        "ingest": tenant.headers(Scope.INGEST),
        "unknown": {"Authorization": "Bearer bk_unknownkeyunknownkeyunknownkey"},
    }[key]
    response = await client.options(path, headers=headers)
    assert response.status_code == 204, response.text
    assert response.headers["allow"] == allow
    assert response.content == b""
