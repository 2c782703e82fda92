"""``/v1/tenant`` and ``/v1/api-keys``: the caller's own tenant and its keys."""

from __future__ import annotations

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.tenants import service
from billing.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    TenantOut,
    TenantPatch,
    api_key_created,
    api_key_out,
    tenant_out,
)
from billing.web.auth import ADMIN, READ, Scope, scopes
from billing.web.dependencies import Caller, Ctx


class TenantController(Controller):
    path = "/tenant"
    tags = ["Tenant"]

    @get(opt=scopes(READ), summary="The caller's tenant")
    async def get_tenant(self, ctx: Ctx, principal: Caller) -> TenantOut:
        async with ctx.database.read() as session:
            return tenant_out(await service.get_tenant(session, principal.tenant_id))

    @patch(opt=scopes(ADMIN), summary="Update tenant settings (secrets are write-only)")
    async def update_tenant(self, ctx: Ctx, principal: Caller, data: JSONBody[TenantPatch]) -> TenantOut:
        async with ctx.database.transaction() as session:
            tenant = await service.get_tenant(session, principal.tenant_id)
            await service.update_tenant(
                session, tenant, data, box=ctx.box, now=ctx.clock.now(), production=ctx.settings.production
            )
            return tenant_out(tenant)


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["Tenant"]

    @get(opt=scopes(ADMIN), summary="List the tenant's API keys (never the keys themselves)")
    async def list_api_keys(
        self, ctx: Ctx, principal: Caller, limit: Limit = 20, starting_after: StartingAfter = None
    ) -> Page[ApiKeyOut]:
        async with ctx.database.read() as session:
            keys, has_more = await service.list_api_keys(
                session, principal.tenant_id, PageRequest(limit, starting_after)
            )
        return Page([api_key_out(key) for key in keys], has_more)

    @post(opt=scopes(ADMIN), summary="Create an API key; the key is shown once")
    async def create_api_key(
        self, ctx: Ctx, principal: Caller, data: JSONBody[ApiKeyCreate]
    ) -> ApiKeyCreated:
        async with ctx.database.transaction() as session:
            key, plaintext = await service.create_api_key(
                session,
                tenant_id=principal.tenant_id,
                scope=Scope(data.scope),
                name=data.name,
                now=ctx.clock.now(),
            )
        return api_key_created(key, plaintext)

    @get("/{key_id:str}", opt=scopes(ADMIN), summary="Get an API key")
    async def get_api_key(self, ctx: Ctx, principal: Caller, key_id: FromPath[str]) -> ApiKeyOut:
        async with ctx.database.read() as session:
            return api_key_out(await service.get_api_key(session, key_id, tenant_id=principal.tenant_id))

    @post("/{key_id:str}/revoke", opt=scopes(ADMIN), status_code=200, summary="Revoke an API key")
    async def revoke_api_key(self, ctx: Ctx, principal: Caller, key_id: FromPath[str]) -> ApiKeyOut:
        async with ctx.database.transaction() as session:
            key = await service.revoke_api_key(
                session, key_id, now=ctx.clock.now(), tenant_id=principal.tenant_id
            )
            return api_key_out(key)
