"""An invoice line as rated, before it is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass
class LineDraft:
    kind: str
    meter_id: str | None
    description: str
    quantity: Decimal
    amount: int
    period_start: datetime
    period_end: datetime
    tiers: list[dict[str, Any]] = field(default_factory=list)
    invoice_item_id: str | None = None
    # The plan the line was rated under (a plan-scoped discount covers only its lines).
    plan_id: str | None = None
    # Set by amounts.compute: [{"discount", "amount"}] and [{"tax_rate", "amount", ...}].
    discount_amounts: list[dict[str, object]] = field(default_factory=list)
    tax_amounts: list[dict[str, object]] = field(default_factory=list)
    discount_id: str | None = None
    # The index of the plan price the line belongs to (usage and its floor or cap); None for
    # every other line and for a meter's unpriced line.
    price_index: int | None = None
    # A grouped price's line: its values of the price's group_by (None: missing or null).
    group: dict[str, str | None] | None = None
    # A meter's unpriced line: the meter's aggregation over the events no price matched.
    unpriced_quantity: Decimal | None = None
