"""``/v1/alerts``: usage and spend alerts, and the triggers they fired."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.alerts import service
from billing.alerts.schemas import AlertCreate, AlertOut, TriggerOut
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.customers.service import filter_customer_id
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import CustomerFilter

StatusFilter = Annotated[Literal["active", "archived"] | None, QueryParameter(description="Alert status")]


class AlertController(Controller):
    path = "/alerts"
    tags = ["Alerts"]

    @post(opt=scopes(ADMIN), summary="Create a usage or spend alert")
    async def create_alert(self, ctx: Ctx, principal: Caller, data: JSONBody[AlertCreate]) -> AlertOut:
        async with ctx.database.transaction() as session:
            alert = await service.create_alert(session, principal.tenant_id, data, ctx.clock.now())
            return (await service.alerts_out(session, [alert]))[0]

    @get(opt=scopes(READ), summary="List alerts, newest first")
    async def list_alerts(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        customer: CustomerFilter = None,
        status: StatusFilter = None,
    ) -> Page[AlertOut]:
        async with ctx.database.read() as session:
            rows, has_more = await service.list_alerts(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                customer_id=await filter_customer_id(session, principal.tenant_id, customer),
                status=status,
            )
            return Page(await service.alerts_out(session, rows), has_more)

    @get("/{alert_id:str}", opt=scopes(READ), summary="Get an alert")
    async def get_alert(self, ctx: Ctx, principal: Caller, alert_id: FromPath[str]) -> AlertOut:
        async with ctx.database.read() as session:
            alert = await service.get_alert(session, principal.tenant_id, alert_id)
            return (await service.alerts_out(session, [alert]))[0]

    @post("/{alert_id:str}/archive", opt=scopes(ADMIN), status_code=200, summary="Archive an alert")
    async def archive_alert(self, ctx: Ctx, principal: Caller, alert_id: FromPath[str]) -> AlertOut:
        async with ctx.database.transaction() as session:
            alert = await service.archive_alert(session, principal.tenant_id, alert_id, ctx.clock.now())
            return (await service.alerts_out(session, [alert]))[0]

    @get("/{alert_id:str}/triggers", opt=scopes(READ), summary="List an alert's triggers, newest first")
    async def list_triggers(
        self,
        ctx: Ctx,
        principal: Caller,
        alert_id: FromPath[str],
        limit: Limit = 20,
        starting_after: StartingAfter = None,
    ) -> Page[TriggerOut]:
        async with ctx.database.read() as session:
            alert = await service.get_alert(session, principal.tenant_id, alert_id)
            rows, has_more = await service.list_triggers(session, alert, PageRequest(limit, starting_after))
            return Page(service.triggers_out(alert, rows), has_more)
