"""``/v1/tax-rates``: the tenant's tax rates."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.tenants import tax_rates
from billing.tenants.schemas import TaxRateCreate, TaxRateOut, TaxRatePatch, tax_rate_out
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx

ActiveFilter = Annotated[
    bool | None, QueryParameter(description="true: only active rates; false: only inactive ones; absent: all")
]


class TaxRateController(Controller):
    path = "/tax-rates"
    tags = ["Taxes"]

    @get(opt=scopes(READ), summary="List tax rates, newest first")
    async def list_tax_rates(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        active: ActiveFilter = None,
    ) -> Page[TaxRateOut]:
        async with ctx.database.read() as session:
            rows, has_more = await tax_rates.list_tax_rates(
                session, principal.tenant_id, PageRequest(limit, starting_after), active=active
            )
        return Page([tax_rate_out(row) for row in rows], has_more)

    @post(opt=scopes(ADMIN), summary="Create a tax rate")
    async def create_tax_rate(self, ctx: Ctx, principal: Caller, data: JSONBody[TaxRateCreate]) -> TaxRateOut:
        async with ctx.database.transaction() as session:
            rate = await tax_rates.create_tax_rate(session, principal.tenant_id, data, now=ctx.clock.now())
        return tax_rate_out(rate)

    @get("/{tax_rate_id:str}", opt=scopes(READ), summary="Get a tax rate")
    async def get_tax_rate(self, ctx: Ctx, principal: Caller, tax_rate_id: FromPath[str]) -> TaxRateOut:
        async with ctx.database.read() as session:
            return tax_rate_out(await tax_rates.get_tax_rate(session, principal.tenant_id, tax_rate_id))

    @patch(
        "/{tax_rate_id:str}",
        opt=scopes(ADMIN),
        summary="Rename, describe, deactivate or reactivate a tax rate",
        description="Percentage, inclusiveness, country and jurisdiction are fixed (as Stripe). An "
        "inactive rate cannot be newly attached; where it is attached already, it keeps applying.",
    )
    async def update_tax_rate(
        self, ctx: Ctx, principal: Caller, tax_rate_id: FromPath[str], data: JSONBody[TaxRatePatch]
    ) -> TaxRateOut:
        async with ctx.database.transaction() as session:
            rate = await tax_rates.get_tax_rate(session, principal.tenant_id, tax_rate_id)
            await tax_rates.update_tax_rate(session, rate, data, now=ctx.clock.now())
            return tax_rate_out(rate)
