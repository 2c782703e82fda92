"""``GET /v1/customers/{id}/usage``: a meter's usage in hour (UTC) or day (customer's zone) buckets."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get
from litestar.params import FromPath, QueryParameter

from billing.core.errors import ValidationFailed
from billing.metering.schemas import UsageOut
from billing.metering.usage_report import usage_report
from billing.web.auth import READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import timestamp_param


class UsageController(Controller):
    path = "/customers/{customer_id:str}/usage"
    tags = ["Usage events"]

    @get(opt=scopes(READ), summary="A meter's usage in buckets; `from` inclusive, `to` exclusive")
    async def get_usage(
        self,
        ctx: Ctx,
        principal: Caller,
        customer_id: FromPath[str],
        meter: Annotated[str, QueryParameter(max_length=64, description="Meter key or id")],
        from_: Annotated[str, QueryParameter(name="from", description="RFC 3339, inclusive")],
        to: Annotated[str, QueryParameter(description="RFC 3339, exclusive")],
        granularity: Annotated[Literal["hour", "day"], QueryParameter()] = "day",
    ) -> UsageOut:
        start, end = timestamp_param("from", from_), timestamp_param("to", to)
        if end <= start:
            raise ValidationFailed.field("to", "must be after from")
        async with ctx.database.read() as session:
            return await usage_report(
                session, principal.tenant_id, customer_id, meter, start, end, granularity
            )
