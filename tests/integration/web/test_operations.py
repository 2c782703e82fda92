"""Health, metrics, the OpenAPI schema, request ids and the 500 that leaks nothing."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from billing.core.context import AppContext
from billing.tenants import service
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem


async def test_liveness_and_readiness_answer_200(client: httpx.AsyncClient, ctx: AppContext) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] == ctx.database.dialect


async def test_readiness_answers_503_when_the_database_is_away(
    client: httpx.AsyncClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(ctx.database, "ping", unreachable)
    assert_problem(await client.get("/health/ready"), 503, "database_unavailable")


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await client.get("/v1/api-keys/key_00000000000000000000000000", headers=tenant.headers())
    text = (await client.get("/metrics")).text
    assert 'path="/v1/api-keys/{key_id}"' in text
    assert "billing_request_duration_seconds_bucket" in text
    assert "key_00000000000000000000000000" not in text


async def test_schema_is_openapi_3_1_and_documents_the_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema")).json()
    assert schema["openapi"].startswith("3.1")
    assert {"/v1/tenant", "/v1/api-keys", "/v1/api-keys/{key_id}"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    docs = await client.get("/schema/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    generated = await client.get("/v1/tenant", headers=tenant.headers())
    assert len(generated.headers["x-request-id"]) == 32
    echoed = await client.get("/v1/tenant", headers={**tenant.headers(), "X-Request-Id": "req-42"})
    assert echoed.headers["x-request-id"] == "req-42"
    problem = await client.get("/v1/tenant", headers={"X-Request-Id": "req-43"})
    assert problem.json()["request_id"] == "req-43"
    hostile = await client.get("/v1/tenant", headers={"X-Request-Id": "a\tb" + "x" * 100})
    assert hostile.headers["x-request-id"] != "a\tb" + "x" * 100


async def test_an_unexpected_error_answers_500_without_traceback_or_secret(
    client: httpx.AsyncClient, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk_live_verysecretvalue0123456789"

    async def explode(*_: object, **__: object) -> None:
        raise RuntimeError(f"cannot reach Stripe with {secret}")

    monkeypatch.setattr(service, "get_tenant", explode)
    response = await client.get("/v1/tenant", headers=tenant.headers())
    body = assert_problem(response, 500, "internal_error")
    assert secret not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


async def test_an_unknown_route_answers_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_a_wrong_method_answers_a_405_problem(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    assert_problem(await client.delete("/v1/tenant", headers=tenant.headers()), 405, "method_not_allowed")
