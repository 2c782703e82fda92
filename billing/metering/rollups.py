"""Hourly rollups: what any aggregation needs from the events of one (customer, meter, UTC hour).

Each row keeps the count, the exact sum, the max and the latest value of its events, folded in
as events are accepted, in the same transaction (``event_store``): an upsert merges a batch's
partial aggregates into it in SQL, so concurrent batches never lose an update. The latest value
is that of the greatest (timestamp, seq), seq being the order in which events were stored. Distinct values
of unique_count meters go to their own table, so that distinct counts over any range stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec


def hour_of(timestamp: datetime) -> datetime:
    return timestamp.replace(minute=0, second=0, microsecond=0)


def unique_key(raw: Any) -> str:
    """How a unique_count property value is stored and compared: strings as they are, else JSON."""
    return raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()


@dataclass
class Partial:
    """The aggregates of some events of one rollup key."""

    event_count: int
    value_sum: Decimal
    value_max: Decimal
    latest_value: Decimal
    latest_at: datetime
    latest_seq: int
