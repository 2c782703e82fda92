"""Fixtures shared by the integration tests of usage ingestion."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TenantHandle, subscribe


@pytest.fixture
async def metered(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    """The tenant with customers acme-1..acme-3 and one meter per aggregation."""
    headers = tenant.headers()
    for n, zone in [(1, "UTC"), (2, "Europe/Berlin"), (3, "Asia/Kolkata")]:
        body = {"external_id": f"acme-{n}", "email": f"billing{n}@acme.example", "timezone": zone}
        assert (await client.post("/v1/customers", headers=headers, json=body)).status_code == 201
    meters = [
        {"key": "api_calls", "name": "API calls", "aggregation": "sum"},
        {"key": "requests", "name": "Requests", "aggregation": "count"},
        {"key": "seats", "name": "Seats", "aggregation": "max"},
        {"key": "users", "name": "Users", "aggregation": "unique_count", "unique_property": "user_id"},
        {"key": "plan_level", "name": "Level", "aggregation": "latest"},
    ]
    for meter in meters:
        assert (await client.post("/v1/meters", headers=headers, json=meter)).status_code == 201
    await subscribe(client, tenant, ["acme-1", "acme-2", "acme-3"], starts_at="2026-01-01T00:00:00Z")
    return tenant
