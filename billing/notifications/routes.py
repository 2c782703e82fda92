"""``GET /v1/notifications`` and ``GET /v1/notifications/preview/{kind}``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from litestar import Controller, MediaType, Response, get
from litestar.params import FromPath, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.notifications import service
from billing.notifications.models import STATUSES
from billing.notifications.queue import ALL_KINDS
from billing.notifications.schemas import NotificationOut, PreviewOut, notification_out, preview_out
from billing.web.auth import READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.openapi import alternative_contents, struct_schema
from billing.web.params import CustomerFilter

Kind = Literal[
    "payment_failed",
    "payment_action_required",
    "final_notice",
    "payment_recovered",
    "card_expiring",
    "card_removed",
    "trial_will_end",
    "credit_note_issued",
    "refund_issued",
    "usage_alert",
    "webhook_endpoint_disabled",
]
Status = Literal["queued", "sent", "failed", "skipped"]
assert set(get_args(Kind)) == set(ALL_KINDS) and set(get_args(Status)) == set(STATUSES)

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
        async with ctx.database.read() as session:
            rows, has_more = await service.list_notifications(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                customer=customer,
                kind=kind,
                status=status,
                invoice_id=invoice,
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
        rendered = await service.preview(ctx, principal.tenant_id, kind, locale=locale)
        if format == "json":
            return Response(preview_out(kind, rendered), media_type=MediaType.JSON)
        if format == "text":
            return Response(rendered.text, media_type=MediaType.TEXT)
        return Response(rendered.html, media_type=MediaType.HTML)
