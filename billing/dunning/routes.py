"""``/v1/dunning/policy`` and ``/v1/dunning/cases``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Literal

import sqlalchemy as sa
from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import NotFound
from billing.core.pagination import Limit, Page, PageRequest, StartingAfter, fetch_page
from billing.dunning.models import DunningCase, DunningPolicy
from billing.dunning.policy import get_policy, policy_out, put_policy
from billing.dunning.schemas import CaseNotificationOut, CaseOut, PolicyIn, PolicyOut
from billing.notifications.models import Notification
from billing.payments.models import Payment
from billing.payments.schemas import PaymentOut, payment_out
from billing.web.auth import ADMIN, READ, scopes
from billing.web.dependencies import Caller, Ctx

CaseStatus = Annotated[
    Literal["active", "recovered", "exhausted", "canceled"] | None, QueryParameter(description="Case status")
]


class DunningController(Controller):
    path = "/dunning"
    tags = ["Dunning"]

    @get("/policy", opt=scopes(READ), summary="The tenant's dunning policy (the default until one is set)")
    async def get_policy(self, ctx: Ctx, principal: Caller) -> PolicyOut:
        async with ctx.database.read() as session:
            row = await session.get(DunningPolicy, principal.tenant_id)
            updated_at = row.updated_at if row is not None else None
            return policy_out(await get_policy(session, principal.tenant_id), updated_at)

    @put("/policy", opt=scopes(ADMIN), summary="Replace the dunning policy")
    async def put_policy(self, ctx: Ctx, principal: Caller, data: JSONBody[PolicyIn]) -> PolicyOut:
        async with ctx.database.transaction() as session:
            return await put_policy(session, principal.tenant_id, data, at=ctx.clock.now())

    @get("/cases", opt=scopes(READ), summary="Dunning cases, newest first")
    async def list_cases(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        status: CaseStatus = None,
    ) -> Page[CaseOut]:
        query = sa.select(DunningCase).where(DunningCase.tenant_id == principal.tenant_id)
        if status is not None:
            query = query.where(DunningCase.status == status)
        async with ctx.database.read() as session:
            rows, has_more = await fetch_page(
                session, query, DunningCase.id, PageRequest(limit, starting_after)
            )
            return Page(await cases_out(session, rows), has_more)

    @get("/cases/{case_id:str}", opt=scopes(READ), summary="A dunning case")
    async def get_case(self, ctx: Ctx, principal: Caller, case_id: FromPath[str]) -> CaseOut:
        async with ctx.database.read() as session:
            case = await session.get(DunningCase, case_id)
            if case is None or case.tenant_id != principal.tenant_id:
                raise NotFound(f"No dunning case {case_id}")
            return (await cases_out(session, [case]))[0]


async def cases_out(session: AsyncSession, cases: Sequence[DunningCase]) -> list[CaseOut]:
    """Cases with their payment attempts and notifications, in three queries."""
    invoice_ids = [case.invoice_id for case in cases]
    attempts: dict[str, list[PaymentOut]] = defaultdict(list)
    for payment in await session.scalars(
        sa.select(Payment).where(Payment.invoice_id.in_(invoice_ids)).order_by(Payment.attempt)
    ):
        attempts[payment.invoice_id].append(payment_out(payment))
    notes: dict[str, list[CaseNotificationOut]] = defaultdict(list)
    for note in await session.scalars(
        sa.select(Notification).where(Notification.invoice_id.in_(invoice_ids)).order_by(Notification.id)
    ):
        if note.invoice_id is not None:
            notes[note.invoice_id].append(
                CaseNotificationOut(
                    note.id, note.kind, note.status, note.dedupe_key, note.created_at, note.sent_at
                )
            )
    return [
        CaseOut(
            id=case.id,
            invoice=case.invoice_id,
            customer=case.customer_id,
            status=case.status,
            attempts=attempts[case.invoice_id],
            failures=case.failures,
            retries=case.retries,
            last_failure_class=case.last_failure_class,
            last_failure_code=case.last_failure_code,
            first_failed_at=case.first_failed_at,
            next_action=case.next_action,
            next_action_at=case.next_action_at,
            notifications=notes[case.invoice_id],
            created_at=case.created_at,
            closed_at=case.closed_at,
        )
        for case in cases
    ]
