"""``/v1/plans``, ``/v1/subscriptions``, ``/v1/invoices`` and ``/v1/billing/run``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream

from billing.core.context import AppContext
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.customers.service import filter_customer_id, get_customer
from billing.invoicing import actions, changes, invoices, plans, standalone, subscriptions
from billing.invoicing.export import export_rows
from billing.invoicing.item_schemas import InvoiceCreate, InvoicePatch
from billing.invoicing.ports import InvoicePayments
from billing.invoicing.schemas import (
    CancelIn,
    InvoiceOut,
    PlanCreate,
    PlanOut,
    PlanPatch,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionPatch,
    plan_out,
)
from billing.invoicing.upcoming import upcoming_invoice
from billing.tenants.service import get_tenant
from billing.web.auth import ADMIN, FINANCE, READ, Principal, scopes
from billing.web.dependencies import Caller, Ctx, Port
from billing.web.params import CustomerFilter, timestamp_param

# The payments of invoices, provided by the composition root (app.py) under this name.
Payments = Port[InvoicePayments]
SubscriptionStatus = Annotated[
    Literal["scheduled", "trialing", "active", "past_due", "canceled", "ended"] | None,
    QueryParameter(description="Subscription status as of now"),
]
StatusFilter = Annotated[
    Literal["draft", "open", "paid", "void", "uncollectible"] | None,
    QueryParameter(description="Invoice status"),
]
TimeFilter = Annotated[str | None, QueryParameter(description="RFC 3339")]
OverdueFilter = Annotated[
    bool | None, QueryParameter(description="Open, something due, and past its due date (or not)")
]


class PlanController(Controller):
    path = "/plans"
    tags = ["Plans and prices"]

    @post(opt=scopes(ADMIN), summary="Create a plan (409 if the code is taken)")
    async def create_plan(self, ctx: Ctx, principal: Caller, data: JSONBody[PlanCreate]) -> PlanOut:
        async with ctx.database.transaction() as session:
            plan = await plans.create_plan(session, principal.tenant_id, data, now=ctx.clock.now())
        return plan_out(plan)

    @get(opt=scopes(READ), summary="List plans, newest first")
    async def list_plans(
        self, ctx: Ctx, principal: Caller, limit: Limit = 20, starting_after: StartingAfter = None
    ) -> Page[PlanOut]:
        async with ctx.database.read() as session:
            rows, has_more = await plans.list_plans(
                session, principal.tenant_id, PageRequest(limit, starting_after)
            )
        return Page([plan_out(row) for row in rows], has_more)

    @get("/{plan_id:str}", opt=scopes(READ), summary="Get a plan by id or code")
    async def get_plan(self, ctx: Ctx, principal: Caller, plan_id: FromPath[str]) -> PlanOut:
        async with ctx.database.read() as session:
            return plan_out(await plans.get_plan(session, principal.tenant_id, plan_id))

    @patch("/{plan_id:str}", opt=scopes(ADMIN), summary="Change a plan no subscription uses (409 otherwise)")
    async def update_plan(
        self, ctx: Ctx, principal: Caller, plan_id: FromPath[str], data: JSONBody[PlanPatch]
    ) -> PlanOut:
        async with ctx.database.transaction() as session:
            plan = await plans.get_plan(session, principal.tenant_id, plan_id)
            return plan_out(await plans.update_plan(session, plan, data, now=ctx.clock.now()))


class SubscriptionController(Controller):
    path = "/subscriptions"
    tags = ["Subscriptions"]

    @post(opt=scopes(ADMIN), summary="Subscribe a customer to a plan")
    async def create_subscription(
        self, ctx: Ctx, principal: Caller, data: JSONBody[SubscriptionCreate]
    ) -> SubscriptionOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            sub = await subscriptions.create_subscription(session, principal.tenant_id, data, now=now)
            return (await subscriptions.subscriptions_out(session, [sub], now))[0]

    @get(opt=scopes(READ), summary="List subscriptions, newest first")
    async def list_subscriptions(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        customer: CustomerFilter = None,
        status: SubscriptionStatus = None,
    ) -> Page[SubscriptionOut]:
        now = ctx.clock.now()
        async with ctx.database.read() as session:
            customer_id = await filter_customer_id(session, principal.tenant_id, customer)
            rows, has_more = await subscriptions.list_subscriptions(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                now=now,
                customer_id=customer_id,
                status=status,
            )
            return Page(await subscriptions.subscriptions_out(session, rows, now), has_more)

    @get("/{subscription_id:str}", opt=scopes(READ), summary="Get a subscription")
    async def get_subscription(
        self, ctx: Ctx, principal: Caller, subscription_id: FromPath[str]
    ) -> SubscriptionOut:
        async with ctx.database.read() as session:
            sub = await subscriptions.get_subscription(session, principal.tenant_id, subscription_id)
            return (await subscriptions.subscriptions_out(session, [sub], ctx.clock.now()))[0]

    @patch(
        "/{subscription_id:str}",
        opt=scopes(ADMIN),
        summary="Change plan, seats, metadata or trial end; now, backdated, or at period end",
    )
    async def change_subscription(
        self, ctx: Ctx, principal: Caller, subscription_id: FromPath[str], data: JSONBody[SubscriptionPatch]
    ) -> SubscriptionOut:
        clock = _clock(ctx, principal)
        async with ctx.database.transaction() as session:
            sub = await subscriptions.get_subscription(
                session, principal.tenant_id, subscription_id, lock=True
            )
            result = await changes.change(session, sub, data, clock)
            return (await subscriptions.subscriptions_out(session, [result], clock.now))[0]

    @post(
        "/{subscription_id:str}/cancel",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Cancel now (a final invoice at once), at period end, or at an instant (`at`)",
    )
    async def cancel_subscription(
        self, ctx: Ctx, principal: Caller, subscription_id: FromPath[str], data: JSONBody[CancelIn]
    ) -> SubscriptionOut:
        clock = _clock(ctx, principal)
        async with ctx.database.transaction() as session:
            sub = await subscriptions.get_subscription(
                session, principal.tenant_id, subscription_id, lock=True
            )
            await changes.cancel(session, sub, data, clock)
            return (await subscriptions.subscriptions_out(session, [sub], clock.now))[0]

    @delete(
        "/{subscription_id:str}/pending-change",
        opt=scopes(ADMIN),
        status_code=200,
        summary="Drop the change waiting for the period end (404 if none)",
    )
    async def delete_pending_change(
        self, ctx: Ctx, principal: Caller, subscription_id: FromPath[str]
    ) -> SubscriptionOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            sub = await subscriptions.get_subscription(
                session, principal.tenant_id, subscription_id, lock=True
            )
            await changes.delete_pending_change(session, sub, now)
            return (await subscriptions.subscriptions_out(session, [sub], now))[0]


def _clock(ctx: AppContext, principal: Principal) -> changes.Clock:
    return changes.Clock(ctx.clock.now(), ctx.settings.allow_time_travel, principal.key_id)


def _time(field: str, value: str | None) -> datetime | None:
    return None if value is None else timestamp_param(field, value)


async def _filters(
    ctx: AppContext,
    tenant_id: str,
    status: str | None,
    customer: str | None,
    period_start_gte: str | None,
    period_start_lt: str | None,
    overdue: bool | None = None,
) -> invoices.InvoiceFilters:
    customer_id = None
    if customer is not None:
        async with ctx.database.read() as session:
            customer_id = (await get_customer(session, tenant_id, customer)).id
    return invoices.InvoiceFilters(
        status=status,
        customer_id=customer_id,
        period_start_gte=_time("period_start_gte", period_start_gte),
        period_start_lt=_time("period_start_lt", period_start_lt),
        overdue=overdue,
        now=ctx.clock.now(),
    )


def _actor(principal: Principal) -> str:
    return principal.key_id


class InvoiceController(Controller):
    path = "/invoices"
    tags = ["Invoices"]

    @get(opt=scopes(READ), summary="List invoices, newest first")
    async def list_invoices(
        self,
        ctx: Ctx,
        principal: Caller,
        invoice_payments: Payments,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        status: StatusFilter = None,
        customer: CustomerFilter = None,
        period_start_gte: TimeFilter = None,
        period_start_lt: TimeFilter = None,
        overdue: OverdueFilter = None,
    ) -> Page[InvoiceOut]:
        filters = await _filters(
            ctx, principal.tenant_id, status, customer, period_start_gte, period_start_lt, overdue
        )
        async with ctx.database.read() as session:
            rows, has_more = await invoices.list_invoices(
                session, principal.tenant_id, filters, PageRequest(limit, starting_after)
            )
            return Page(
                await invoices.invoices_out(session, rows, invoice_payments, now=filters.now), has_more
            )

    @post(opt=scopes(ADMIN), summary="Create a standalone invoice (a draft) from one-off items")
    async def create_invoice(
        self, ctx: Ctx, principal: Caller, invoice_payments: Payments, data: JSONBody[InvoiceCreate]
    ) -> InvoiceOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            tenant = await get_tenant(session, principal.tenant_id)
            invoice = await standalone.create_invoice(session, tenant, data, now=now, actor=_actor(principal))
            return (await invoices.invoices_out(session, [invoice], invoice_payments, now=now))[0]

    @patch(
        "/{invoice_id:str}",
        opt=scopes(ADMIN),
        summary="Set the memo (draft only) or replace the metadata",
    )
    async def update_invoice(
        self,
        ctx: Ctx,
        principal: Caller,
        invoice_payments: Payments,
        invoice_id: FromPath[str],
        data: JSONBody[InvoicePatch],
    ) -> InvoiceOut:
        now = ctx.clock.now()
        async with ctx.database.transaction() as session:
            invoice = await standalone.update_invoice(session, principal.tenant_id, invoice_id, data, now=now)
            return (await invoices.invoices_out(session, [invoice], invoice_payments, now=now))[0]

    @get(
        "/export.csv",
        opt=scopes(READ),
        media_type="text/csv",
        summary="Invoice lines as CSV, with the list's filters",
    )
    async def export_invoices(
        self,
        ctx: Ctx,
        principal: Caller,
        invoice_payments: Payments,
        status: StatusFilter = None,
        customer: CustomerFilter = None,
        period_start_gte: TimeFilter = None,
        period_start_lt: TimeFilter = None,
        overdue: OverdueFilter = None,
    ) -> Stream:
        filters = await _filters(
            ctx, principal.tenant_id, status, customer, period_start_gte, period_start_lt, overdue
        )
        return Stream(
            export_rows(ctx.database, principal.tenant_id, filters, invoice_payments),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="invoices.csv"'},
        )

    @get("/{invoice_id:str}", opt=scopes(READ), summary="Get an invoice")
    async def get_invoice(
        self, ctx: Ctx, principal: Caller, invoice_payments: Payments, invoice_id: FromPath[str]
    ) -> InvoiceOut:
        return await actions.read_invoice(ctx, principal.tenant_id, invoice_id, invoice_payments)

    @post("/{invoice_id:str}/finalize", opt=scopes(FINANCE), status_code=200, summary="Finalize a draft now")
    async def finalize_invoice(
        self, ctx: Ctx, principal: Caller, invoice_payments: Payments, invoice_id: FromPath[str]
    ) -> InvoiceOut:
        return await actions.finalize_now(
            ctx, principal.tenant_id, invoice_id, invoice_payments, actor=_actor(principal)
        )

    @post(
        "/{invoice_id:str}/void", opt=scopes(FINANCE), status_code=200, summary="Void a draft or open invoice"
    )
    async def void_invoice(
        self, ctx: Ctx, principal: Caller, invoice_payments: Payments, invoice_id: FromPath[str]
    ) -> InvoiceOut:
        return await actions.void_now(
            ctx, principal.tenant_id, invoice_id, invoice_payments, actor=_actor(principal)
        )

    @post(
        "/{invoice_id:str}/mark-uncollectible",
        opt=scopes(FINANCE),
        status_code=200,
        summary="Give up collecting an open invoice",
    )
    async def mark_uncollectible(
        self, ctx: Ctx, principal: Caller, invoice_payments: Payments, invoice_id: FromPath[str]
    ) -> InvoiceOut:
        return await actions.mark_uncollectible_now(
            ctx, principal.tenant_id, invoice_id, invoice_payments, actor=_actor(principal)
        )


class UpcomingInvoiceController(Controller):
    path = "/customers/{customer_id:str}/upcoming-invoice"
    tags = ["Invoices"]

    @get(opt=scopes(READ), summary="The invoice the current period would produce now")
    async def upcoming(self, ctx: Ctx, principal: Caller, customer_id: FromPath[str]) -> InvoiceOut:
        async with ctx.database.read() as session:
            customer = await get_customer(session, principal.tenant_id, customer_id)
            return await upcoming_invoice(session, customer, ctx.clock.now())
