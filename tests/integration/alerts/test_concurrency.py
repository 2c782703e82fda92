"""Two replicas evaluating the same new usage at once record each crossing once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from billing.alerts.evaluate import evaluate_due
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.outbox import OutboxEvent
from billing.core.settings import Settings
from tests.conftest import TenantHandle
from tests.integration.alerts.helpers import create_alert, emails, events, set_up, triggers

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


@pytest.mark.postgres_only
async def test_two_concurrent_passes_fire_each_threshold_once(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, settings: Settings, clock: FrozenClock
) -> None:
    customers = tuple(f"c{n}" for n in range(8))
    await set_up(client, tenant, customers)
    alert = await create_alert(
        client, tenant, meter="api_calls", type="usage_units", thresholds=["1", "2", "3"], email=True
    )
    for customer in customers:
        await events(client, tenant, customer, ("api_calls", "5", "2026-11-21T10:00:00Z"))
    other = AppContext.create(settings, clock=clock)
    try:
        fired = await asyncio.gather(
            evaluate_due(ctx, at=NOW),
            evaluate_due(other, at=NOW),
            evaluate_due(other, at=NOW, tenant_id=tenant.id),
        )
    finally:
        await other.close()
    assert sum(fired) == 3 * len(customers)
    listed = await triggers(client, tenant, alert["id"])
    assert len(listed) == 3 * len(customers)
    assert len({(t["customer"], t["threshold"]) for t in listed}) == len(listed)
    async with ctx.database.read() as session:
        topics = await session.scalars(
            sa.select(OutboxEvent.topic).where(OutboxEvent.topic == "alert.triggered")
        )
        assert len(list(topics)) == 3 * len(customers)
    assert len(await emails(client, tenant)) == 3 * len(customers)
