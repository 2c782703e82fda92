"""``GET /v1/notifications`` and ``GET /v1/notifications/preview/{kind}``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import sqlalchemy as sa
from litestar import Controller, MediaType, Response, get
from litestar.params import FromPath, QueryParameter

from billing.core.errors import NotFound
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter, fetch_page
from billing.customers.service import get_customer
from billing.notifications.models import STATUSES, Notification
from billing.notifications.queue import ALL_KINDS
from billing.notifications.render import render
from billing.notifications.samples import sample_context
from billing.notifications.schemas import NotificationOut, PreviewOut, notification_out
from billing.tenants.models import Tenant
from billing.web.auth import READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.openapi import alternative_contents, struct_schema

Kind = Literal[
    "payment_failed",
    "payment_action_required",
    "final_notice",
    "payment_recovered",
    "card_expiring",
    "card_removed",
    "webhook_endpoint_disabled",
]
Status = Literal["queued", "sent", "failed", "skipped"]
assert set(get_args(Kind)) == set(ALL_KINDS) and set(get_args(Status)) == set(STATUSES)

CustomerFilter = Annotated[
    str | None, QueryParameter(max_length=128, description="Customer id or external_id")
]
KindFilter = Annotated[Kind | None, QueryParameter(description="Notification kind")]
StatusFilter = Annotated[Status | None, QueryParameter(description="Delivery status")]
InvoiceFilter = Annotated[str | None, QueryParameter(max_length=40, description="Invoice id")]
PreviewFormat = Annotated[
    Literal["html", "text", "json"], QueryParameter(description="html, text, or json with the subject too")
]
PreviewLocale = Annotated[
    str | None, QueryParameter(max_length=16, description="Locale of the sample customer, e.g. de or fr-CA")
]


class NotificationController(Controller):
    path = "/notifications"
    tags = ["Notifications"]

    @get(opt=scopes(READ), summary="List emails queued or sent, newest first")
    async def list_notifications(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        customer: CustomerFilter = None,
        kind: KindFilter = None,
        status: StatusFilter = None,
        invoice: InvoiceFilter = None,
    ) -> Page[NotificationOut]:
        query = sa.select(Notification).where(Notification.tenant_id == principal.tenant_id)
        async with ctx.database.read() as session:
            if customer is not None:
                customer_id = (await get_customer(session, principal.tenant_id, customer)).id
                query = query.where(Notification.customer_id == customer_id)
            for column, value in ((Notification.kind, kind), (Notification.status, status)):
                if value is not None:
                    query = query.where(column == value)
            if invoice is not None:
                query = query.where(Notification.invoice_id == invoice)
            rows, has_more = await fetch_page(
                session, query, Notification.id, PageRequest(limit, starting_after)
            )
        return Page([notification_out(row) for row in rows], has_more)

    @get(
        "/preview/{kind:str}",
        opt=scopes(READ),
        summary="Render an email with sample data and the caller's branding",
        media_type=MediaType.HTML,
        operation_class=alternative_contents(
            200, {MediaType.JSON: struct_schema(PreviewOut), MediaType.TEXT: {"type": "string"}}
        ),
    )
    async def preview(
        self,
        ctx: Ctx,
        principal: Caller,
        kind: FromPath[str],
        format: PreviewFormat = "html",
        locale: PreviewLocale = None,
    ) -> Response[Any]:
        if kind not in ALL_KINDS:
            raise NotFound(f"No email kind '{kind}'; kinds: {', '.join(ALL_KINDS)}")
        async with ctx.database.read() as session:
            tenant = await session.get(Tenant, principal.tenant_id)
        if tenant is None:
            raise NotFound("No such tenant")
        rendered = render(kind, sample_context(kind, tenant, ctx.clock.now(), locale))
        if format == "json":
            preview = PreviewOut(kind, rendered.subject, rendered.html, rendered.text)
            return Response(preview, media_type=MediaType.JSON)
        if format == "text":
            return Response(rendered.text, media_type=MediaType.TEXT)
        return Response(rendered.html, media_type=MediaType.HTML)
