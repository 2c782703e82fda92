import httpx


async def test_tenant_is_readable_with_its_admin_key(client: httpx.AsyncClient, tenant) -> None:
    response = await client.get("/v1/tenant", headers=tenant.headers())
    assert response.status_code == 200
    assert response.json()["id"] == tenant.id
