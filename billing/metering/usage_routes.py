"""``GET /v1/customers/{id}/usage``: a meter's usage in hour (UTC) or day (customer's zone) buckets."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.params import FromPath, QueryParameter

from billing.core import money
from billing.core.errors import ValidationFailed
from billing.customers.service import get_customer
from billing.metering import usage
from billing.metering.meters import get_meter
from billing.tenants.service import get_tenant
from billing.web.auth import READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import timestamp_param

MAX_BUCKETS = 1000


class UsageBucket(msgspec.Struct):
    start: datetime
    value: str | None


class UsageOut(msgspec.Struct):
    customer: str
    meter: str
    aggregation: str
    granularity: str
    timezone: str
    buckets: list[UsageBucket]


def _format(value: Decimal | None) -> str | None:
    return None if value is None else money.format_decimal(value)


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
            customer = await get_customer(session, principal.tenant_id, customer_id)
            found = await get_meter(session, principal.tenant_id, meter)
            zone = customer.timezone or (await get_tenant(session, principal.tenant_id)).billing_timezone
            ranges = (
                usage.hour_ranges(start, end) if granularity == "hour" else usage.day_ranges(start, end, zone)
            )
            if len(ranges) > MAX_BUCKETS:
                raise ValidationFailed.field("to", f"at most {MAX_BUCKETS} buckets per request")
            tallies = await usage.tallies(session, principal.tenant_id, customer.id, found, ranges)
        return UsageOut(
            customer=customer.id,
            meter=found.key,
            aggregation=found.aggregation,
            granularity=granularity,
            timezone="UTC" if granularity == "hour" else zone,
            buckets=[
                UsageBucket(start, _format(t.value(found.aggregation)))
                for (start, _), t in zip(ranges, tallies, strict=True)
            ],
        )
