"""``/v1/meters``: what is counted."""

from __future__ import annotations

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.metering import meters
from billing.metering.schemas import MeterCreate, MeterOut, MeterPatch, meter_out
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx


class MeterController(Controller):
    path = "/meters"
    tags = ["Meters"]

    @get(opt=scopes(READ), summary="List meters, newest first")
    async def list_meters(
        self, ctx: Ctx, principal: Caller, limit: Limit = 20, starting_after: StartingAfter = None
    ) -> Page[MeterOut]:
        async with ctx.database.read() as session:
            rows, has_more = await meters.list_meters(
                session, principal.tenant_id, PageRequest(limit, starting_after)
            )
        return Page([meter_out(row) for row in rows], has_more)

    @post(opt=scopes(ADMIN), summary="Create a meter (409 if the key is taken)")
    async def create_meter(self, ctx: Ctx, principal: Caller, data: JSONBody[MeterCreate]) -> MeterOut:
        async with ctx.database.transaction() as session:
            meter = await meters.create_meter(session, principal.tenant_id, data, now=ctx.clock.now())
        return meter_out(meter)

    @get("/{meter_id:str}", opt=scopes(READ), summary="Get a meter by id or key")
    async def get_meter(self, ctx: Ctx, principal: Caller, meter_id: FromPath[str]) -> MeterOut:
        async with ctx.database.read() as session:
            return meter_out(await meters.get_meter(session, principal.tenant_id, meter_id))

    @patch("/{meter_id:str}", opt=scopes(ADMIN), summary="Rename a meter or change its unit")
    async def update_meter(
        self, ctx: Ctx, principal: Caller, meter_id: FromPath[str], data: JSONBody[MeterPatch]
    ) -> MeterOut:
        async with ctx.database.transaction() as session:
            meter = await meters.get_meter(session, principal.tenant_id, meter_id)
            await meters.update_meter(session, meter, data, now=ctx.clock.now())
            return meter_out(meter)
