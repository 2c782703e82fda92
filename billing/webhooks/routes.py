"""``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.context import AppContext
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.web.auth import ADMIN, FINANCE, READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.webhooks import deliveries, endpoints
from billing.webhooks.dispatcher import deliver_due
from billing.webhooks.schemas import (
    DeliveryOut,
    DeliveryStatus,
    EndpointCreate,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
    RotateSecretIn,
    endpoint_out,
    endpoint_with_secret,
)

StatusFilter = Annotated[DeliveryStatus | None, QueryParameter(description="Delivery status")]
TypeFilter = Annotated[str | None, QueryParameter(max_length=64, description="Event type")]


class WebhookEndpointController(Controller):
    path = "/webhook-endpoints"
    tags = ["Outgoing webhooks"]

    @post(opt=scopes(ADMIN), summary="Create an endpoint; its signing secret is shown once")
    async def create_endpoint(
        self, ctx: Ctx, principal: Caller, data: JSONBody[EndpointCreate]
    ) -> EndpointWithSecret:
        async with ctx.database.transaction() as session:
            endpoint, secret = await endpoints.create_endpoint(
                session,
                principal.tenant_id,
                data,
                box=ctx.box,
                now=ctx.clock.now(),
                production=ctx.settings.production,
            )
        return endpoint_with_secret(endpoint, secret)

    @get(opt=scopes(READ), summary="List endpoints, newest first")
    async def list_endpoints(
        self, ctx: Ctx, principal: Caller, limit: Limit = 20, starting_after: StartingAfter = None
    ) -> Page[EndpointOut]:
        async with ctx.database.read() as session:
            rows, has_more = await endpoints.list_endpoints(
                session, principal.tenant_id, PageRequest(limit, starting_after)
            )
        return Page([endpoint_out(row) for row in rows], has_more)

    @get("/{endpoint_id:str}", opt=scopes(READ), summary="Get an endpoint")
    async def get_endpoint(self, ctx: Ctx, principal: Caller, endpoint_id: FromPath[str]) -> EndpointOut:
        async with ctx.database.read() as session:
            endpoint = await endpoints.get_endpoint(session, principal.tenant_id, endpoint_id)
        return endpoint_out(endpoint)

    @patch(
        "/{endpoint_id:str}",
        opt=scopes(ADMIN),
        summary="Change the URL, events or description; enable or disable",
    )
    async def update_endpoint(
        self, ctx: Ctx, principal: Caller, endpoint_id: FromPath[str], data: JSONBody[EndpointPatch]
    ) -> EndpointOut:
        async with ctx.database.transaction() as session:
            endpoint = await endpoints.get_endpoint(session, principal.tenant_id, endpoint_id, lock=True)
            endpoints.update_endpoint(endpoint, data, now=ctx.clock.now(), production=ctx.settings.production)
        return endpoint_out(endpoint)

    @delete("/{endpoint_id:str}", opt=scopes(ADMIN), summary="Delete an endpoint and its delivery log")
    async def delete_endpoint(self, ctx: Ctx, principal: Caller, endpoint_id: FromPath[str]) -> None:
        async with ctx.database.transaction() as session:
            await endpoints.delete_endpoint(session, principal.tenant_id, endpoint_id)

    @post(
        "/{endpoint_id:str}/rotate-secret",
        opt=scopes(ADMIN),
        status_code=200,
        summary="A new signing secret (shown once); the old one also signs for 24 h unless told otherwise",
    )
    async def rotate_secret(
        self,
        ctx: Ctx,
        principal: Caller,
        endpoint_id: FromPath[str],
        data: JSONBody[RotateSecretIn | None] = None,
    ) -> EndpointWithSecret:
        keep = timedelta(seconds=(data or RotateSecretIn()).expire_previous_in_seconds)
        async with ctx.database.transaction() as session:
            endpoint = await endpoints.get_endpoint(session, principal.tenant_id, endpoint_id, lock=True)
            secret = endpoints.rotate_secret(endpoint, box=ctx.box, now=ctx.clock.now(), keep_previous=keep)
        return endpoint_with_secret(endpoint, secret)

    @get("/{endpoint_id:str}/deliveries", opt=scopes(READ), summary="The endpoint's deliveries, newest first")
    async def list_deliveries(
        self,
        ctx: Ctx,
        principal: Caller,
        endpoint_id: FromPath[str],
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        status: StatusFilter = None,
        type: TypeFilter = None,
    ) -> Page[DeliveryOut]:
        async with ctx.database.read() as session:
            endpoint = await endpoints.get_endpoint(session, principal.tenant_id, endpoint_id)
            rows, has_more = await deliveries.list_deliveries(
                session, endpoint, PageRequest(limit, starting_after), status=status, event_type=type
            )
            return Page(await deliveries.deliveries_out(session, rows), has_more)


class WebhookDeliveryController(Controller):
    path = "/webhook-deliveries"
    tags = ["Outgoing webhooks"]

    @get("/{delivery_id:str}", opt=scopes(READ), summary="Get a delivery with its attempts")
    async def get_delivery(self, ctx: Ctx, principal: Caller, delivery_id: FromPath[str]) -> DeliveryOut:
        return await _delivery(ctx, principal.tenant_id, delivery_id)

    @post(
        "/{delivery_id:str}/retry",
        opt=scopes(FINANCE),
        status_code=200,
        summary="Attempt a delivery again now, same webhook-id and body (409 if the endpoint is disabled)",
    )
    async def retry_delivery(self, ctx: Ctx, principal: Caller, delivery_id: FromPath[str]) -> DeliveryOut:
        async with ctx.database.transaction() as session:
            delivery = await deliveries.get_delivery(session, principal.tenant_id, delivery_id)
            await deliveries.requeue(session, delivery, now=ctx.clock.now())
        await deliver_due(ctx, only=delivery_id, limit=1)
        return await _delivery(ctx, principal.tenant_id, delivery_id)


async def _delivery(ctx: AppContext, tenant_id: str, delivery_id: str) -> DeliveryOut:
    async with ctx.database.read() as session:
        delivery = await deliveries.get_delivery(session, tenant_id, delivery_id)
        return (await deliveries.deliveries_out(session, [delivery]))[0]
