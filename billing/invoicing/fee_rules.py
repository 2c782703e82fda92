"""The fee each event pays under a percentage price, as ingestion computes it (see
``billing.metering.coverage.FeeRule``).

An event's fee depends only on its plan, its meter, its group values and its value: the group
decides which of the meter's prices it wins (``price_match``), and only a percentage price
charges a fee (``percentage.fee``). A subscription keeps its plan for life and a plan is
immutable once a subscription uses it, so the rules of a plan are kept by plan id for the life
of the process.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import percentage, price_match
from billing.invoicing.catalog import load_catalog
from billing.invoicing.models import Plan
from billing.invoicing.plans import Rate, prices_of
from billing.invoicing.price_checks import group_by_of
from billing.metering.coverage import FeeRule
from billing.metering.groups import GroupValues
from billing.metering.models import Meter

_GROUPS_KEPT = 10_000
_PLANS_KEPT = 50_000
_rules: dict[str, dict[str, FeeRule]] = {}


class MeterFees:
    """The fee rule of one meter in one plan: the winning price of each group, remembered."""

    __slots__ = ("currency", "group_by", "rates", "terms", "won")

    def __init__(self, group_by: Sequence[str], priced: Sequence[tuple[dict[str, Any], Rate]], currency: str):
        self.group_by = tuple(group_by)
        self.terms = [price_match.Terms.of(stored) for stored, _ in priced]
        self.rates = [rate for _, rate in priced]
        self.currency = currency
        self.won: dict[GroupValues, percentage.PercentagePrice | None] = {}

    def __call__(self, values: GroupValues, value: Decimal) -> Decimal | None:
        price = self.won[values] if values in self.won else self._winner(values)
        return None if price is None else percentage.fee(value, price, self.currency)

    def _winner(self, values: GroupValues) -> percentage.PercentagePrice | None:
        won = price_match.winner(self.terms, dict(zip(self.group_by, values, strict=False)))
        rate = None if won is None else self.rates[won]
        price = rate if isinstance(rate, percentage.PercentagePrice) else None
        if len(self.won) < _GROUPS_KEPT:
            self.won[values] = price
        return price


def rules_of(plan: Plan, meters: Mapping[str, Meter]) -> dict[str, FeeRule]:
    """A rule per meter that has a percentage price in the plan."""
    by_meter: dict[str, list[tuple[dict[str, Any], Rate]]] = {}
    for stored, rate in prices_of(plan):
        by_meter.setdefault(stored["meter_id"], []).append((stored, rate))
    return {
        meter_id: MeterFees(group_by_of(meters[meter_id]), priced, plan.currency)
        for meter_id, priced in by_meter.items()
        if any(isinstance(rate, percentage.PercentagePrice) for _, rate in priced)
    }


async def fee_rules(session: AsyncSession, plan_ids: Collection[str]) -> dict[str, dict[str, FeeRule]]:
    """The rules of these plans, by plan id (an empty mapping for a plan without percentage prices)."""
    missing = [plan_id for plan_id in plan_ids if plan_id not in _rules]
    if missing:
        catalog = await load_catalog(session, missing)
        if len(_rules) + len(catalog.plans) > _PLANS_KEPT:
            _rules.clear()
        for plan in catalog.plans.values():
            _rules[plan.id] = rules_of(plan, catalog.meters_of(plan))
    return {plan_id: _rules[plan_id] for plan_id in plan_ids if plan_id in _rules}
