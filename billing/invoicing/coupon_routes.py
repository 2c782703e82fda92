"""``/v1/coupons`` and ``/v1/customers/{id}/discounts``: coupons, and their redemptions."""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.customers.service import get_customer
from billing.invoicing import coupons, discounts
from billing.invoicing.coupon_schemas import CouponCreate, CouponOut, CouponPatch, DiscountCreate, DiscountOut
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx


class CouponController(Controller):
    path = "/coupons"
    tags = ["Coupons"]

    @post(opt=scopes(ADMIN), summary="Create a coupon (409 when the code is taken)")
    async def create_coupon(self, ctx: Ctx, principal: Caller, data: JSONBody[CouponCreate]) -> CouponOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            coupon = await coupons.create_coupon(session, principal.tenant_id, data, now=now)
            (shown,) = await coupons.coupons_out(session, [coupon], now)
            return shown

    @get(opt=scopes(READ), summary="List coupons, newest first (deleted ones too, not valid)")
    async def list_coupons(
        self, ctx: Ctx, principal: Caller, limit: Limit = 20, starting_after: StartingAfter = None
    ) -> Page[CouponOut]:
        async with ctx.database.read() as session:
            rows, has_more = await coupons.list_coupons(
                session, principal.tenant_id, PageRequest(limit, starting_after)
            )
            return Page(await coupons.coupons_out(session, rows, ctx.clock.now()), has_more)

    @get("/{coupon:str}", opt=scopes(READ), summary="Get a coupon by id or code")
    async def get_coupon(self, ctx: Ctx, principal: Caller, coupon: FromPath[str]) -> CouponOut:
        async with ctx.database.read() as session:
            row = await coupons.get_coupon(session, principal.tenant_id, coupon)
            (shown,) = await coupons.coupons_out(session, [row], ctx.clock.now())
            return shown

    @patch("/{coupon:str}", opt=scopes(ADMIN), summary="Rename a coupon or replace its metadata")
    async def update_coupon(
        self, ctx: Ctx, principal: Caller, coupon: FromPath[str], data: JSONBody[CouponPatch]
    ) -> CouponOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            row = await coupons.update_coupon(session, principal.tenant_id, coupon, data, now=now)
            (shown,) = await coupons.coupons_out(session, [row], now)
            return shown

    @delete(
        "/{coupon:str}",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Delete a coupon: no new redemptions; existing discounts run on",
    )
    async def delete_coupon(self, ctx: Ctx, principal: Caller, coupon: FromPath[str]) -> CouponOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            row = await coupons.delete_coupon(session, principal.tenant_id, coupon, now=now)
            (shown,) = await coupons.coupons_out(session, [row], now)
            return shown


class CustomerDiscountController(Controller):
    path = "/customers/{customer_id:str}/discounts"
    tags = ["Coupons"]

    @post(opt=scopes(ADMIN), summary="Redeem a coupon for the customer")
    async def create_discount(
        self, ctx: Ctx, principal: Caller, customer_id: FromPath[str], data: JSONBody[DiscountCreate]
    ) -> DiscountOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            discount = await discounts.create_discount(session, customer, data.coupon, now=now)
            (shown,) = await discounts.discounts_out(session, [discount], now)
            return shown

    @get(opt=scopes(READ), summary="List the customer's discounts, newest first")
    async def list_discounts(
        self,
        ctx: Ctx,
        principal: Caller,
        customer_id: FromPath[str],
        limit: Limit = 20,
        starting_after: StartingAfter = None,
    ) -> Page[DiscountOut]:
        async with ctx.database.read() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            rows, has_more = await discounts.list_discounts(
                session, customer, PageRequest(limit, starting_after)
            )
            return Page(await discounts.discounts_out(session, rows, ctx.clock.now()), has_more)

    @get("/{discount_id:str}", opt=scopes(READ), summary="Get one of the customer's discounts")
    async def get_discount(
        self, ctx: Ctx, principal: Caller, customer_id: FromPath[str], discount_id: FromPath[str]
    ) -> DiscountOut:
        async with ctx.database.read() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            discount = await discounts.get_discount(session, customer, discount_id)
            (shown,) = await discounts.discounts_out(session, [discount], ctx.clock.now())
            return shown

    @delete(
        "/{discount_id:str}",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Remove a discount: drafts recompute without it, finalized invoices keep it",
    )
    async def remove_discount(
        self, ctx: Ctx, principal: Caller, customer_id: FromPath[str], discount_id: FromPath[str]
    ) -> DiscountOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            discount = await discounts.remove_discount(session, customer, discount_id, now=now)
            (shown,) = await discounts.discounts_out(session, [discount], now)
            return shown
