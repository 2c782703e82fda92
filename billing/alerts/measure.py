"""What an alert measures over the watched period: the meter's quantity, or the usage lines as
invoicing rates them (caps applied; no floors, base fees, discounts, tax or credits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from billing.alerts.models import Alert
from billing.alerts.period import Watched
from billing.invoicing import lines
from billing.invoicing.catalog import load_catalog
from billing.invoicing.fee_tallies import period_fees
from billing.invoicing.grouped_usage import customer_usage
from billing.metering import usage
from billing.metering.models import Meter

# A price's lines as the period rates them so far. Its floor (price_minimum) is left out: it
# bills at the period's close whatever the usage, so it would fire spend alerts on day one.
SPEND_KINDS = frozenset({"usage", "price_maximum"})


@dataclass
class Measures:
    """The values of one customer's period, each computed once for all the alerts watching it."""

    tenant_id: str
    customer_id: str
    watched: Watched
    _quantities: dict[str, Decimal | None] = field(default_factory=dict)
    _spend: list[lines.LineDraft] | None = None

    async def value(self, session: AsyncSession, alert: Alert, meter: Meter | None) -> Decimal | None:
        """The alert's value now; None when there is nothing to compare (a max or latest meter
        without events)."""
        if alert.type == "usage_units":
            assert meter is not None  # a usage alert always has one
            return await self._quantity(session, meter)
        spent = [
            line
            for line in await self._usage_lines(session)
            if line.kind in SPEND_KINDS and (alert.meter_id is None or line.meter_id == alert.meter_id)
        ]
        return Decimal(sum(line.amount for line in spent))

    async def _quantity(self, session: AsyncSession, meter: Meter) -> Decimal | None:
        if meter.id not in self._quantities:
            period = self.watched.period
            tallies = await usage.period_tallies(
                session, self.tenant_id, [self.customer_id], [meter], (period.start, period.end)
            )
            tally = tallies.get((self.customer_id, meter.id))
            self._quantities[meter.id] = (tally or usage.Tally()).value(meter.aggregation)
        return self._quantities[meter.id]

    async def _usage_lines(self, session: AsyncSession) -> list[lines.LineDraft]:
        """Each subscription's piece of the period rated as its draft would be."""
        if self._spend is None:
            catalog = await load_catalog(
                session, {piece.subscription.plan_id for piece in self.watched.pieces}
            )
            self._spend = []
            for piece in self.watched.pieces:
                plan = catalog.plans[piece.subscription.plan_id]
                meters = catalog.meters_of(plan)
                grouped = await customer_usage(
                    session,
                    self.tenant_id,
                    self.customer_id,
                    plan,
                    meters,
                    (piece.period.start, piece.period.end),
                )
                fees = await period_fees(
                    session,
                    self.tenant_id,
                    {self.customer_id: plan},
                    meters,
                    (piece.period.start, piece.period.end),
                )
                self._spend += lines.period_lines(
                    plan,
                    meters,
                    piece.period,
                    piece.subscription,
                    {},
                    grouped=grouped,
                    fees=fees.get(self.customer_id),
                )
        return self._spend
