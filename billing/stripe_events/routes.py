"""``/v1/stripe-events``: the inbox as the tenant sees it, and replays of failed or skipped events."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.stripe_events import service
from billing.stripe_events.process import process_due
from billing.stripe_events.schemas import StripeEventOut, stripe_event_out
from billing.web.auth import FINANCE, READ, scopes
from billing.web.dependencies import Caller, Ctx

StatusFilter = Annotated[
    Literal["received", "processed", "failed", "skipped"] | None,
    QueryParameter(description="Processing status"),
]
TypeFilter = Annotated[str | None, QueryParameter(max_length=100, description="Stripe event type")]


class StripeEventController(Controller):
    path = "/stripe-events"
    tags = ["Stripe events"]

    @get(opt=scopes(READ), summary="List received Stripe events, newest first")
    async def list_stripe_events(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        status: StatusFilter = None,
        type: TypeFilter = None,
    ) -> Page[StripeEventOut]:
        async with ctx.database.read() as session:
            rows, has_more = await service.list_events(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                status=status,
                event_type=type,
            )
        return Page([stripe_event_out(row) for row in rows], has_more)

    @get("/{stored_event_id:str}", opt=scopes(READ), summary="Get a received Stripe event")
    async def get_stripe_event(
        self, ctx: Ctx, principal: Caller, stored_event_id: FromPath[str]
    ) -> StripeEventOut:
        async with ctx.database.read() as session:
            return stripe_event_out(await service.get_event(session, principal.tenant_id, stored_event_id))

    @post(
        "/{stored_event_id:str}/reprocess",
        opt=scopes(FINANCE),
        status_code=200,
        summary="Process a failed or skipped event again, now (409 once processed)",
    )
    async def reprocess_stripe_event(
        self, ctx: Ctx, principal: Caller, stored_event_id: FromPath[str]
    ) -> StripeEventOut:
        async with ctx.database.transaction() as session:
            await service.requeue(session, principal.tenant_id, stored_event_id, now=ctx.clock.now())
        await process_due(ctx, limit=1, only=stored_event_id)
        async with ctx.database.read() as session:
            return stripe_event_out(await service.get_event(session, principal.tenant_id, stored_event_id))
