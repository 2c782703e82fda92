"""``/v1/invoice-items``: one-off amounts for a customer's next invoice, or for a draft."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.customers.service import filter_customer_id
from billing.invoicing import items
from billing.invoicing.item_schemas import InvoiceItemCreate, InvoiceItemOut, invoice_item_out
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import CustomerFilter

StatusFilter = Annotated[
    Literal["pending", "invoiced", "deleted"] | None, QueryParameter(description="Item status")
]


class InvoiceItemController(Controller):
    path = "/invoice-items"
    tags = ["Invoice items"]

    @post(opt=scopes(ADMIN), summary="Create an item for the customer's next invoice, or for a draft")
    async def create_item(
        self, ctx: Ctx, principal: Caller, data: JSONBody[InvoiceItemCreate]
    ) -> InvoiceItemOut:
        async with ctx.database.transaction() as session:
            item = await items.create_item(session, principal.tenant_id, data, now=ctx.clock.now())
            return invoice_item_out(item)

    @get(opt=scopes(READ), summary="List invoice items, newest first")
    async def list_items(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        customer: CustomerFilter = None,
        status: StatusFilter = None,
    ) -> Page[InvoiceItemOut]:
        async with ctx.database.read() as session:
            customer_id = await filter_customer_id(session, principal.tenant_id, customer)
            rows, has_more = await items.list_items(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                customer_id=customer_id,
                status=status,
            )
            return Page([invoice_item_out(row) for row in rows], has_more)

    @get("/{item_id:str}", opt=scopes(READ), summary="Get an invoice item")
    async def get_item(self, ctx: Ctx, principal: Caller, item_id: FromPath[str]) -> InvoiceItemOut:
        async with ctx.database.read() as session:
            return invoice_item_out(await items.get_item(session, principal.tenant_id, item_id))

    @delete(
        "/{item_id:str}",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Delete a pending item (409 once an invoice has it)",
    )
    async def delete_item(self, ctx: Ctx, principal: Caller, item_id: FromPath[str]) -> InvoiceItemOut:
        async with ctx.database.transaction() as session:
            item = await items.delete_item(session, principal.tenant_id, item_id, now=ctx.clock.now())
            return invoice_item_out(item)
