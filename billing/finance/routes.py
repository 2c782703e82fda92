"""``/finance``: log in and out, the overview, customers, the invoice list, an invoice, its actions
and the CSV export."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from billing.core.context import AppContext
from billing.core.errors import ApiError, BadRequest, NotFound
from billing.finance import customers, invoice_detail, invoice_list, overview, overview_charts, pages
from billing.finance.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    current_user,
    log_in,
    log_out,
    login_token,
    login_token_matches,
    session_cookie,
)
from billing.finance.web import (
    EXCEPTION_HANDLERS,
    HOME_PATH,
    USER_DEPENDENCY,
    User,
    checked_form,
    expired_cookie,
    safe_next,
    see_other,
)
from billing.finance.web import (
    session_cookie as cookie,
)
from billing.invoicing import actions
from billing.invoicing.export import export_rows
from billing.payments.charge import pay_now
from billing.payments.views import PAYMENTS
from billing.web.dependencies import Ctx

DONE = {
    "finalize": "The invoice is finalized.",
    "pay": "The charge was attempted; its outcome is below.",
    "void": "The invoice is void.",
    "mark-uncollectible": "The invoice is marked uncollectible.",
}


class SessionPages(Controller):
    @get("/login")
    async def login_form(
        self, ctx: Ctx, request: Request[Any, Any, Any], next: FromQuery[str | None] = None
    ) -> Response[Any]:
        if await current_user(ctx, request.cookies.get(SESSION_COOKIE)) is not None:
            return see_other(safe_next(next))
        return _login_page(ctx, request, next=safe_next(next))

    @post("/login")
    async def login(self, ctx: Ctx, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        target = safe_next(fields.get("next"))
        if not login_token_matches(ctx, request.cookies.get(LOGIN_COOKIE), fields.get(CSRF_FIELD)):
            return _login_page(
                ctx, request, next=target, error="The form expired. Please try again.", status=403
            )
        user = await log_in(ctx, fields.get("api_key", ""))
        if user is None:
            error = "This key is unknown, revoked, or not a finance or admin key."
            return _login_page(ctx, request, next=target, error=error, status=401)
        return see_other(
            target,
            cookies=[
                cookie(request, SESSION_COOKIE, session_cookie(ctx, user), SESSION_SECONDS),
                expired_cookie(request, LOGIN_COOKIE),
            ],
        )

    @post("/logout", dependencies=USER_DEPENDENCY)
    async def logout(self, ctx: Ctx, request: Request[Any, Any, Any], user: User) -> Response[Any]:
        await checked_form(request, user)
        await log_out(ctx, user)
        return see_other("/finance/login", cookies=[expired_cookie(request, SESSION_COOKIE)])

    @get("/static/finance.css")
    async def stylesheet(self) -> Response[str]:
        return Response(
            pages.stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
        )


def _login_page(
    ctx: AppContext,
    request: Request[Any, Any, Any],
    *,
    next: str,
    error: str | None = None,
    status: int = 200,
) -> Response[Any]:
    token, cookie_value = login_token(ctx)
    response = pages.render(
        "login.html", status_code=status, user=None, csrf_token=token, next=next, error=error
    )
    response.set_cookie(cookie(request, LOGIN_COOKIE, cookie_value, LOGIN_FORM_SECONDS))
    return response


class InvoicePages(Controller):
    path = "/invoices"
    dependencies = USER_DEPENDENCY

    @get()
    async def invoice_list(self, ctx: Ctx, request: Request[Any, Any, Any], user: User) -> Response[Any]:
        async with ctx.database.read() as session:
            query = await invoice_list.read_query(
                session, user.tenant_id, request.query_params, ctx.clock.now()
            )
            if query.errors:
                totals, rows = [], []
            else:
                totals = await invoice_list.totals(session, user.tenant_id, query.filters)
                rows = await invoice_list.page_of(session, user.tenant_id, query)
        count = sum(total.count for total in totals)
        return pages.render(
            "invoices.html",
            status_code=400 if query.errors else 200,
            user=user,
            section="invoices",
            query=query,
            statuses=invoice_list.STATUSES,
            totals=totals,
            invoices=rows,
            count=count,
            pages=max(1, -(-count // invoice_list.PAGE_SIZE)),
        )

    @get("/export.csv")
    async def export(self, ctx: Ctx, request: Request[Any, Any, Any], user: User) -> Response[Any]:
        async with ctx.database.read() as session:
            query = await invoice_list.read_query(
                session, user.tenant_id, request.query_params, ctx.clock.now()
            )
        if query.errors:
            raise BadRequest("The filter is not valid; correct it on the invoice list first")
        return Stream(
            export_rows(ctx.database, user.tenant_id, query.filters, PAYMENTS),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="invoices.csv"',
                "Cache-Control": "no-store",
            },
        )

    @get("/{invoice_id:str}")
    async def invoice(
        self, ctx: Ctx, user: User, invoice_id: FromPath[str], done: FromQuery[str | None] = None
    ) -> Response[Any]:
        return await _invoice_page(ctx, user, invoice_id, notice=DONE.get(done or ""))

    @get("/{invoice_id:str}/{action:str}")
    async def confirm(
        self, ctx: Ctx, user: User, invoice_id: FromPath[str], action: FromPath[str]
    ) -> Response[Any]:
        if action not in invoice_detail.ACTIONS:
            raise NotFound(f"No action {action}")
        page = await invoice_detail.load(ctx, user.tenant_id, invoice_id)
        chosen = next((a for a in page.actions if a.name == action), invoice_detail.ACTIONS[action])
        return pages.render("confirm.html", user=user, section="invoices", page=page, action=chosen)

    @post("/{invoice_id:str}/{action:str}")
    async def act(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        user: User,
        invoice_id: FromPath[str],
        action: FromPath[str],
    ) -> Response[Any]:
        await checked_form(request, user)
        run = _RUNNERS.get(action)
        if run is None:
            raise NotFound(f"No action {action}")
        try:
            await run(ctx, user.tenant_id, invoice_id, user.actor)
        except ApiError as exc:
            if isinstance(exc, NotFound):
                raise
            return await _invoice_page(ctx, user, invoice_id, error=exc.detail, status=exc.status)
        return see_other(f"/finance/invoices/{invoice_id}?done={action}")


async def _invoice_page(
    ctx: AppContext,
    user: Any,
    invoice_id: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response[Any]:
    page = await invoice_detail.load(ctx, user.tenant_id, invoice_id)
    return pages.render(
        "invoice.html",
        status_code=status,
        user=user,
        section="invoices",
        page=page,
        notice=notice,
        error=error,
    )


# Each action as the invoice page runs it: (ctx, tenant id, invoice id, actor).
_RUNNERS: dict[str, Callable[[AppContext, str, str, str], Awaitable[object]]] = {
    "finalize": lambda ctx, tenant_id, invoice_id, actor: actions.finalize_now(
        ctx, tenant_id, invoice_id, PAYMENTS, actor=actor
    ),
    "pay": lambda ctx, tenant_id, invoice_id, actor: pay_now(ctx, tenant_id, invoice_id),
    "void": lambda ctx, tenant_id, invoice_id, actor: actions.void_now(
        ctx, tenant_id, invoice_id, PAYMENTS, actor=actor
    ),
    "mark-uncollectible": lambda ctx, tenant_id, invoice_id, actor: actions.mark_uncollectible_now(
        ctx, tenant_id, invoice_id, PAYMENTS, actor=actor
    ),
}


class HomePage(Controller):
    dependencies = USER_DEPENDENCY

    @get("/")
    async def home(self, user: User) -> Response[Any]:
        return see_other("/finance/overview")


class OverviewPage(Controller):
    path = "/overview"
    dependencies = USER_DEPENDENCY

    @get()
    async def overview(self, ctx: Ctx, user: User) -> Response[Any]:
        page = await overview.load(ctx, user.tenant_id)
        charts = overview_charts.charts_of(page)
        return pages.render("overview.html", user=user, section="overview", page=page, charts=charts)


class CustomerPages(Controller):
    path = "/customers"
    dependencies = USER_DEPENDENCY

    @get()
    async def customer_list(self, ctx: Ctx, request: Request[Any, Any, Any], user: User) -> Response[Any]:
        page = await customers.load_list(ctx, user.tenant_id, request.query_params)
        return pages.render(
            "customers.html",
            status_code=400 if page.query.errors else 200,
            user=user,
            section="customers",
            page=page,
            payment_statuses=customers.PAYMENT_STATUSES,
            dunning_filters=customers.DUNNING_FILTERS,
        )

    @get("/{customer_id:str}")
    async def customer(self, ctx: Ctx, user: User, customer_id: FromPath[str]) -> Response[Any]:
        page = await customers.load(ctx, user.tenant_id, customer_id)
        return pages.render("customer.html", user=user, section="customers", page=page)


def finance_router() -> Router:
    return Router(
        path=HOME_PATH,
        route_handlers=[SessionPages, InvoicePages, OverviewPage, CustomerPages, HomePage],
        exception_handlers=EXCEPTION_HANDLERS,
        include_in_schema=False,
    )
