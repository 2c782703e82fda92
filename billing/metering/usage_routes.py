"""``GET /v1/customers/{id}/usage``: a meter's usage in hour (UTC) or day (customer's zone)
buckets, whole or per group, filtered by group values."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.params import FromPath, QueryParameter

from billing.core.errors import ValidationFailed
from billing.metering.schemas import UsageOut
from billing.metering.usage_report import GroupQuery, usage_report
from billing.web.auth import READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import timestamp_param

FILTER = re.compile(r"filter\[(.*)\]")


class UsageController(Controller):
    path = "/customers/{customer_id:str}/usage"
    tags = ["Usage events"]

    @get(
        opt=scopes(READ),
        summary="A meter's usage in buckets; `from` inclusive, `to` exclusive",
        description=(
            "`group_by` (repeated, or a comma-separated list) splits the buckets by keys of the"
            " meter's `group_by`: the answer then has `group_by` and `groups` instead of `buckets`,"
            " groups sorted by their values, null last. `filter[key]=value` (repeated for several"
            " values) keeps the usage whose value of `key` is one of those listed, for every key given."
        ),
    )
    async def get_usage(
        self,
        ctx: Ctx,
        principal: Caller,
        request: Request[Any, Any, Any],
        customer_id: FromPath[str],
        meter: Annotated[str, QueryParameter(max_length=64, description="Meter key or id")],
        from_: Annotated[str, QueryParameter(name="from", description="RFC 3339, inclusive")],
        to: Annotated[str, QueryParameter(description="RFC 3339, exclusive")],
        granularity: Annotated[Literal["hour", "day"], QueryParameter()] = "day",
        group_by: Annotated[
            list[str] | None, QueryParameter(description="Keys of the meter's group_by to split by")
        ] = None,
    ) -> UsageOut:
        start, end = timestamp_param("from", from_), timestamp_param("to", to)
        if end <= start:
            raise ValidationFailed.field("to", "must be after from")
        query = GroupQuery(_group_by(group_by or []), _filters(request))
        async with ctx.database.read() as session:
            return await usage_report(
                session, principal.tenant_id, customer_id, meter, start, end, granularity, query
            )


def _group_by(values: list[str]) -> list[str]:
    keys = [key.strip() for value in values for key in value.split(",")]
    if any(not key for key in keys):
        raise ValidationFailed.field("group_by", "an empty key")
    return keys


def _filters(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    """``filter[key]=value`` parameters, by key, in the order given."""
    found: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        match = FILTER.fullmatch(name)
        if match:
            found.setdefault(match.group(1), []).append(value)
        elif name.startswith("filter"):
            raise ValidationFailed.field(name, "filters are written filter[key]=value")
    return found
