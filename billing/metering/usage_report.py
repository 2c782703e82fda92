"""A customer's usage of one meter in hour (UTC) or day (the customer's zone) buckets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import ValidationFailed
from billing.customers.service import get_customer
from billing.metering import usage
from billing.metering.meters import get_meter
from billing.metering.schemas import UsageOut, usage_out
from billing.tenants.service import get_tenant

MAX_BUCKETS = 1000


async def usage_report(
    session: AsyncSession,
    tenant_id: str,
    customer_ref: str,
    meter_ref: str,
    start: datetime,
    end: datetime,
    granularity: str,
) -> UsageOut:
    """Buckets of ``[start, end)``; the customer and the meter by id, external_id or key."""
    customer = await get_customer(session, tenant_id, customer_ref)
    meter = await get_meter(session, tenant_id, meter_ref)
    zone = customer.timezone or (await get_tenant(session, tenant_id)).billing_timezone
    ranges = usage.hour_ranges(start, end) if granularity == "hour" else usage.day_ranges(start, end, zone)
    if len(ranges) > MAX_BUCKETS:
        raise ValidationFailed.field("to", f"at most {MAX_BUCKETS} buckets per request")
    tallies = await usage.tallies(session, tenant_id, customer.id, meter, ranges)
    return usage_out(
        customer.id,
        meter,
        granularity=granularity,
        timezone="UTC" if granularity == "hour" else zone,
        buckets=[
            (bucket_start, tally.value(meter.aggregation))
            for (bucket_start, _), tally in zip(ranges, tallies, strict=True)
        ],
    )
