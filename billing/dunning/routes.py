"""``/v1/dunning/policy`` and ``/v1/dunning/cases``."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.dunning import cases
from billing.dunning.policy import put_policy, read_policy
from billing.dunning.schemas import CaseOut, PolicyIn, PolicyOut
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
            return await read_policy(session, principal.tenant_id)

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
        async with ctx.database.read() as session:
            rows, has_more = await cases.list_cases(
                session, principal.tenant_id, PageRequest(limit, starting_after), status=status
            )
            return Page(await cases.cases_out(session, rows), has_more)

    @get("/cases/{case_id:str}", opt=scopes(READ), summary="A dunning case")
    async def get_case(self, ctx: Ctx, principal: Caller, case_id: FromPath[str]) -> CaseOut:
        async with ctx.database.read() as session:
            case = await cases.get_case(session, principal.tenant_id, case_id)
            return (await cases.cases_out(session, [case]))[0]
