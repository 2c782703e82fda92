"""``/v1/stripe-events``: the inbox as the tenant sees it, and replays of failed or skipped events."""

from __future__ import annotations

from typing import Annotated, Literal

import sqlalchemy as sa
from litestar import Controller, get, post
from litestar.params import FromPath, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import Conflict, NotFound
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter, fetch_page
from billing.stripe_events.models import PROCESSED, RECEIVED, StripeEvent
from billing.stripe_events.process import process_due
from billing.stripe_events.schemas import StripeEventOut
from billing.web.auth import FINANCE, READ, scopes
from billing.web.dependencies import Caller, Ctx

StatusFilter = Annotated[
    Literal["received", "processed", "failed", "skipped"] | None,
    QueryParameter(description="Processing status"),
]
TypeFilter = Annotated[str | None, QueryParameter(max_length=100, description="Stripe event type")]


def stripe_event_out(row: StripeEvent) -> StripeEventOut:
    return StripeEventOut(
        id=row.id,
        stripe_event_id=row.stripe_event_id,
        type=row.type,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        livemode=row.livemode,
        api_version=row.api_version,
        created_at=row.created_at,
        received_at=row.received_at,
        next_attempt_at=row.next_attempt_at if row.status == RECEIVED else None,
        processed_at=row.handled_at,
    )


async def _get(session: AsyncSession, tenant_id: str, event_id: str) -> StripeEvent:
    row = await session.get(StripeEvent, event_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"No Stripe event {event_id}")
    return row


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
        query = sa.select(StripeEvent).where(StripeEvent.tenant_id == principal.tenant_id)
        if status is not None:
            query = query.where(StripeEvent.status == status)
        if type is not None:
            query = query.where(StripeEvent.type == type)
        async with ctx.database.read() as session:
            rows, has_more = await fetch_page(
                session, query, StripeEvent.id, PageRequest(limit, starting_after)
            )
        return Page([stripe_event_out(row) for row in rows], has_more)

    @get("/{stored_event_id:str}", opt=scopes(READ), summary="Get a received Stripe event")
    async def get_stripe_event(
        self, ctx: Ctx, principal: Caller, stored_event_id: FromPath[str]
    ) -> StripeEventOut:
        async with ctx.database.read() as session:
            return stripe_event_out(await _get(session, principal.tenant_id, stored_event_id))

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
            row = await _get(session, principal.tenant_id, stored_event_id)
            if row.status == PROCESSED:
                raise Conflict(
                    f"Stripe event {stored_event_id} was processed already", code="invalid_transition"
                )
            if row.status != RECEIVED:
                row.status, row.attempts, row.last_error, row.handled_at = RECEIVED, 0, None, None
            row.next_attempt_at = ctx.clock.now()
        await process_due(ctx, limit=1, only=stored_event_id)
        async with ctx.database.read() as session:
            return stripe_event_out(await _get(session, principal.tenant_id, stored_event_id))
