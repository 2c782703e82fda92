"""``/v1/customers``: who is billed."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.customers import service as customers
from billing.customers.archived import ensure_not_archived
from billing.customers.ports import CustomerPorts
from billing.customers.schemas import CustomerCreate, CustomerOut, CustomerPatch, customer_out
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx, Port

# Filled in by the composition root (app.py) under this name.
Ports = Port[CustomerPorts]
EmailFilter = Annotated[
    str | None, QueryParameter(max_length=320, description="Only customers with this email")
]
ExternalIdFilter = Annotated[
    str | None, QueryParameter(max_length=128, description="Only the customer with this external_id")
]
ArchivedFilter = Annotated[
    bool | None,
    QueryParameter(description="true: only archived customers; false: only active ones; absent: all of them"),
]


class CustomerController(Controller):
    path = "/customers"
    tags = ["Customers"]

    @get(
        opt=scopes(READ),
        summary="List customers, newest first",
        description="Archived customers are listed too, with their `archived_at`, unless `archived` "
        "filters them in or out.",
    )
    async def list_customers(
        self,
        ctx: Ctx,
        principal: Caller,
        customer_ports: Ports,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        email: EmailFilter = None,
        external_id: ExternalIdFilter = None,
        archived: ArchivedFilter = None,
    ) -> Page[CustomerOut]:
        async with ctx.database.read() as session:
            rows, has_more = await customers.list_customers(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                email=email,
                external_id=external_id,
                archived=archived,
            )
            return Page(await customers.customers_out(session, rows, customer_ports.summaries), has_more)

    @post(opt=scopes(ADMIN), summary="Create a customer (409 if the external_id is taken)")
    async def create_customer(
        self, ctx: Ctx, principal: Caller, data: JSONBody[CustomerCreate]
    ) -> CustomerOut:
        async with ctx.database.transaction() as session:
            customer = await customers.create_customer(
                session, principal.tenant_id, data, now=ctx.clock.now()
            )
        return customer_out(customer)

    @get("/{customer_id:str}", opt=scopes(READ), summary="Get a customer by id or external_id")
    async def get_customer(
        self, ctx: Ctx, principal: Caller, customer_ports: Ports, customer_id: FromPath[str]
    ) -> CustomerOut:
        async with ctx.database.read() as session:
            customer = await customers.get_customer(session, principal.tenant_id, customer_id)
            return (await customers.customers_out(session, [customer], customer_ports.summaries))[0]

    @patch("/{customer_id:str}", opt=scopes(ADMIN), summary="Update a customer by id or external_id")
    async def update_customer(
        self,
        ctx: Ctx,
        principal: Caller,
        customer_ports: Ports,
        customer_id: FromPath[str],
        data: JSONBody[CustomerPatch],
    ) -> CustomerOut:
        async with ctx.database.transaction() as session:
            customer = await customers.get_customer(session, principal.tenant_id, customer_id)
            ensure_not_archived(await customers.lock_customer(session, customer))
            previous_method = customer.default_payment_method
            await customers.update_customer(
                session,
                customer,
                data,
                now=ctx.clock.now(),
                billing_history=customer_ports.has_billing_history,
            )
            if customer.default_payment_method not in (None, previous_method):
                await customer_ports.payment_method_changed(session, customer.id, at=ctx.clock.now())
            return (await customers.customers_out(session, [customer], customer_ports.summaries))[0]

    @delete(
        "/{customer_id:str}",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Archive a customer by id or external_id (again: the same answer)",
        description="As Stripe's delete, keeping the history: its subscriptions are cancelled now "
        "with their final invoices, open invoices stay collectible, and from then on its events are "
        "rejected (`customer_archived`) and new subscriptions and changes answer 409 "
        "`customer_archived`. The external_id stays taken.",
    )
    async def archive_customer(
        self, ctx: Ctx, principal: Caller, customer_ports: Ports, customer_id: FromPath[str]
    ) -> CustomerOut:
        async with ctx.database.transaction() as session:
            customer = await customers.get_customer(session, principal.tenant_id, customer_id)
            await customer_ports.archive(session, customer, now=ctx.clock.now())
            return (await customers.customers_out(session, [customer], customer_ports.summaries))[0]
