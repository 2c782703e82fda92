"""The plans and meters a group of subscriptions is priced with, loaded in two queries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.models import Plan
from billing.metering.models import Meter


@dataclass(frozen=True)
class Catalog:
    plans: dict[str, Plan]
    meters: dict[str, Meter]

    def meters_of(self, plan: Plan) -> dict[str, Meter]:
        return {price["meter_id"]: self.meters[price["meter_id"]] for price in plan.prices}


async def load_catalog(session: AsyncSession, plan_ids: Iterable[str]) -> Catalog:
    plans = {
        plan.id: plan for plan in await session.scalars(sa.select(Plan).where(Plan.id.in_(set(plan_ids))))
    }
    meter_ids = {price["meter_id"] for plan in plans.values() for price in plan.prices}
    meters = {
        meter.id: meter for meter in await session.scalars(sa.select(Meter).where(Meter.id.in_(meter_ids)))
    }
    return Catalog(plans, meters)
