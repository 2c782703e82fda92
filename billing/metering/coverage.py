"""Which subscription covers a usage event, as ingestion sees it: an interface metering owns.

An event is accepted only inside a subscription (else ``no_subscription``), so that it belongs to
exactly one period, and an event for a period that has already ended flags its subscription for
the billing run. Metering knows nothing of subscriptions beyond these windows and the start of
the period holding an instant (for the cardinality cap of grouped meters), and, per plan, how
much an event of a meter pays when its price is a percentage of each event's value (the fee is
stored with the event and summed in the rollups, so that a period is billed without reading its
events again): invoicing implements :class:`CoverageSource` and the composition root hands it to
ingestion.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Coverage:
    subscription_id: str
    starts_at: datetime
    cancel_at: datetime | None
    billed_through: datetime | None
    next_period_end: datetime | None
    # The start of the subscription period holding a covered instant; without it, the whole
    # subscription is one period.
    period_start_of: Callable[[datetime], datetime] | None = None
    plan_id: str | None = None

    def period_start(self, at: datetime) -> datetime:
        return self.starts_at if self.period_start_of is None else self.period_start_of(at)

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.cancel_at is None or at < self.cancel_at)

    def is_late(self, at: datetime, now: datetime) -> bool:
        """Whether ``at`` falls in a period that has ended (closed into an invoice or about to be)."""
        if self.billed_through is not None and at < self.billed_through:
            return True
        return self.next_period_end is not None and self.next_period_end <= now and at < self.next_period_end


# An event's fee, exact, in minor units, from its group values (in the meter's group_by order;
# ``()`` on a meter without group_by) and its value; None when the price the event's group wins
# is not a percentage price.
FeeRule = Callable[[tuple[str | None, ...], Decimal], Decimal | None]


class CoverageSource(Protocol):
    async def coverages(
        self, session: AsyncSession, tenant_id: str, customer_ids: Collection[str]
    ) -> dict[str, list[Coverage]]:
        """Every subscription window of these customers, by customer id."""
        ...

    async def flag_late_usage(
        self, session: AsyncSession, subscription_ids: Collection[str], now: datetime
    ) -> None:
        """Tell the billing run that usage arrived for periods that have ended."""
        ...

    async def fee_rules(
        self, session: AsyncSession, plan_ids: Collection[str]
    ) -> dict[str, dict[str, FeeRule]]:
        """Per plan id, a fee rule per meter that has a percentage price in the plan (no entry
        for the others, so that their events pay nothing for fees)."""
        ...


def covering(candidates: list[Coverage], at: datetime) -> Coverage | None:
    for candidate in candidates:  # ``covers`` inlined: this runs for every event ingested
        if candidate.starts_at <= at and (candidate.cancel_at is None or at < candidate.cancel_at):
            return candidate
    return None
