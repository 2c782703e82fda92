"""``/v1/customers`` and ``/v1/meters``: who is billed and what is counted."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.dunning.cases import payment_method_changed
from billing.dunning.summary import customers_out
from billing.metering import customers, meters
from billing.metering.schemas import (
    CustomerCreate,
    CustomerOut,
    CustomerPatch,
    MeterCreate,
    MeterOut,
    MeterPatch,
)
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx

EmailFilter = Annotated[
    str | None, QueryParameter(max_length=320, description="Only customers with this email")
]
ExternalIdFilter = Annotated[
    str | None, QueryParameter(max_length=128, description="Only the customer with this external_id")
]


class CustomerController(Controller):
    path = "/customers"
    tags = ["Customers"]

    @get(opt=scopes(READ), summary="List customers, newest first")
    async def list_customers(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        email: EmailFilter = None,
        external_id: ExternalIdFilter = None,
    ) -> Page[CustomerOut]:
        async with ctx.database.read() as session:
            rows, has_more = await customers.list_customers(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                email=email,
                external_id=external_id,
            )
            return Page(await customers_out(session, rows), has_more)

    @post(opt=scopes(ADMIN), summary="Create a customer (409 if the external_id is taken)")
    async def create_customer(
        self, ctx: Ctx, principal: Caller, data: JSONBody[CustomerCreate]
    ) -> CustomerOut:
        async with ctx.database.transaction() as session:
            customer = await customers.create_customer(
                session, principal.tenant_id, data, now=ctx.clock.now()
            )
        return customers.customer_out(customer)

    @get("/{customer_id:str}", opt=scopes(READ), summary="Get a customer by id or external_id")
    async def get_customer(self, ctx: Ctx, principal: Caller, customer_id: FromPath[str]) -> CustomerOut:
        async with ctx.database.read() as session:
            customer = await customers.get_customer(session, principal.tenant_id, customer_id)
            return (await customers_out(session, [customer]))[0]

    @patch("/{customer_id:str}", opt=scopes(ADMIN), summary="Update a customer by id or external_id")
    async def update_customer(
        self, ctx: Ctx, principal: Caller, customer_id: FromPath[str], data: JSONBody[CustomerPatch]
    ) -> CustomerOut:
        async with ctx.database.transaction() as session:
            customer = await customers.get_customer(session, principal.tenant_id, customer_id)
            previous_method = customer.default_payment_method
            await customers.update_customer(session, customer, data, now=ctx.clock.now())
            if customer.default_payment_method not in (None, previous_method):
                await payment_method_changed(session, customer.id, at=ctx.clock.now())
            return (await customers_out(session, [customer]))[0]


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
        return Page([meters.meter_out(row) for row in rows], has_more)

    @post(opt=scopes(ADMIN), summary="Create a meter (409 if the key is taken)")
    async def create_meter(self, ctx: Ctx, principal: Caller, data: JSONBody[MeterCreate]) -> MeterOut:
        async with ctx.database.transaction() as session:
            meter = await meters.create_meter(session, principal.tenant_id, data, now=ctx.clock.now())
        return meters.meter_out(meter)

    @get("/{meter_id:str}", opt=scopes(READ), summary="Get a meter by id or key")
    async def get_meter(self, ctx: Ctx, principal: Caller, meter_id: FromPath[str]) -> MeterOut:
        async with ctx.database.read() as session:
            return meters.meter_out(await meters.get_meter(session, principal.tenant_id, meter_id))

    @patch("/{meter_id:str}", opt=scopes(ADMIN), summary="Rename a meter or change its unit")
    async def update_meter(
        self, ctx: Ctx, principal: Caller, meter_id: FromPath[str], data: JSONBody[MeterPatch]
    ) -> MeterOut:
        async with ctx.database.transaction() as session:
            meter = await meters.get_meter(session, principal.tenant_id, meter_id)
            await meters.update_meter(session, meter, data, now=ctx.clock.now())
            return meters.meter_out(meter)
