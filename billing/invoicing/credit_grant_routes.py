"""``/v1/credit-grants`` and a customer's credit grants, balance and ledger."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core import validation
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.credits import balance, grants
from billing.credits.schemas import (
    CreditBalanceOut,
    CreditGrantCreate,
    CreditGrantOut,
    LedgerEntryOut,
    ledger_entry_out,
)
from billing.customers.service import filter_customer_id, get_customer
from billing.invoicing import grant_invoices
from billing.invoicing.ports import InvoicePayments
from billing.tenants.service import get_tenant
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx, Port
from billing.web.params import CustomerFilter

Payments = Port[InvoicePayments]
GrantStatus = Annotated[
    Literal["pending", "active", "depleted", "expired", "voided"] | None,
    QueryParameter(description="Credit grant status"),
]
CurrencyFilter = Annotated[str | None, QueryParameter(max_length=3, description="ISO 4217 currency")]
GrantFilter = Annotated[str | None, QueryParameter(max_length=64, description="Credit grant id")]


class CreditGrantController(Controller):
    path = "/credit-grants"
    tags = ["Prepaid credits"]

    @get(opt=scopes(READ), summary="List credit grants, newest first")
    async def list_grants(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        customer: CustomerFilter = None,
        status: GrantStatus = None,
    ) -> Page[CreditGrantOut]:
        async with ctx.database.read() as session:
            customer_id = await filter_customer_id(session, principal.tenant_id, customer)
            rows, has_more = await grants.list_grants(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                customer_id=customer_id,
                status=status,
            )
            return Page(await grants.grants_out(session, rows), has_more)

    @get("/{grant_id:str}", opt=scopes(READ), summary="Get a credit grant")
    async def get_grant(self, ctx: Ctx, principal: Caller, grant_id: FromPath[str]) -> CreditGrantOut:
        async with ctx.database.read() as session:
            grant = await grants.get_grant(session, principal.tenant_id, grant_id)
            return (await grants.grants_out(session, [grant]))[0]

    @post(
        "/{grant_id:str}/void",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Void what is left of a grant (a pending one: with its unpaid invoice)",
    )
    async def void_grant(
        self, ctx: Ctx, principal: Caller, invoice_payments: Payments, grant_id: FromPath[str]
    ) -> CreditGrantOut:
        async with ctx.database.transaction() as session:
            grant = await grant_invoices.void_grant(
                session,
                principal.tenant_id,
                grant_id,
                invoice_payments,
                now=ctx.clock.now(),
                actor=principal.key_id,
            )
            return (await grants.grants_out(session, [grant]))[0]


class CustomerCreditController(Controller):
    path = "/customers/{customer_id:str}"
    tags = ["Prepaid credits"]

    @post("/credit-grants", opt=scopes(ADMIN), summary="Grant credit (a paid grant is invoiced at once)")
    async def create_grant(
        self, ctx: Ctx, principal: Caller, customer_id: FromPath[str], data: JSONBody[CreditGrantCreate]
    ) -> CreditGrantOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            tenant = await get_tenant(session, principal.tenant_id)
            grant = await grant_invoices.create_grant(
                session, tenant, customer_id, data, now=now, actor=principal.key_id
            )
            return (await grants.grants_out(session, [grant]))[0]

    @get("/credit-balance", opt=scopes(READ), summary="The customer's credit balance per currency")
    async def credit_balance(
        self, ctx: Ctx, principal: Caller, customer_id: FromPath[str]
    ) -> CreditBalanceOut:
        async with ctx.database.read() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            return await balance.credit_balance(session, customer)

    @get("/credit-ledger", opt=scopes(READ), summary="The customer's credit ledger, newest first")
    async def credit_ledger(
        self,
        ctx: Ctx,
        principal: Caller,
        customer_id: FromPath[str],
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        currency: CurrencyFilter = None,
        credit_grant: GrantFilter = None,
    ) -> Page[LedgerEntryOut]:
        async with ctx.database.read() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            rows, has_more = await balance.ledger_entries(
                session,
                customer,
                PageRequest(limit, starting_after),
                currency=None if currency is None else validation.currency("currency", currency),
                credit_grant=credit_grant,
            )
            return Page([ledger_entry_out(row) for row in rows], has_more)
