"""Hourly rollups, folded in as events are accepted, in the same transaction.

Each (tenant, customer, meter, UTC hour) row keeps the count, the exact sum, the max and the
latest value of its events; an upsert merges a batch's partial aggregates into it in SQL, so
concurrent batches never lose an update. Distinct values of unique_count meters go to their
own table, so that distinct counts over any range stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing import money
from billing.db import decimal_add, decimal_max, insert_ignore
from billing.metering.usage_models import UsageRollup, UsageUniqueValue

if TYPE_CHECKING:
    from billing.metering.ingest import Candidate

RollupKey = tuple[str, str, datetime]  # customer, meter, hour


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

    def add(self, value: Decimal, at: datetime, seq: int) -> None:
        self.event_count += 1
        self.value_sum = money.exact_add(self.value_sum, value)
        self.value_max = max(self.value_max, value)
        if (at, seq) > (self.latest_at, self.latest_seq):
            self.latest_value, self.latest_at, self.latest_seq = value, at, seq


def partials(events: Sequence[tuple[Decimal, datetime, int, RollupKey]]) -> dict[RollupKey, Partial]:
    """Fold (value, timestamp, seq, key) tuples into one partial aggregate per key."""
    folded: dict[RollupKey, Partial] = {}
    for value, at, seq, key in events:
        partial = folded.get(key)
        if partial is None:
            folded[key] = Partial(1, value, value, value, at, seq)
        else:
            partial.add(value, at, seq)
    return folded


async def add_events(
    session: AsyncSession, tenant_id: str, accepted: Sequence[tuple[Candidate, int]]
) -> None:
    if not accepted:
        return
    folded = partials(
        [
            (c.value, c.timestamp, seq, (c.customer_id, c.meter.id, hour_of(c.timestamp)))
            for c, seq in accepted
        ]
    )
    rows = [
        {"tenant_id": tenant_id, "customer_id": key[0], "meter_id": key[1], "hour": key[2], **vars(partial)}
        for key, partial in sorted(folded.items())
    ]
    await session.execute(_upsert(session.get_bind().dialect.name), rows)
    uniques = sorted(
        {
            (c.customer_id, c.meter.id, hour_of(c.timestamp), c.unique_value)
            for c, _ in accepted
            if c.unique_value is not None
        }
    )
    if uniques:
        table = UsageUniqueValue.__table__
        await insert_ignore(
            session,
            table,
            [
                {"tenant_id": tenant_id, "customer_id": c, "meter_id": m, "hour": h, "value": v}
                for c, m, h, v in uniques
            ],
        )


def _upsert(dialect: str) -> Any:
    table = UsageRollup.__table__
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    new = stmt.excluded
    newer = sa.tuple_(new.latest_at, new.latest_seq) > sa.tuple_(table.c.latest_at, table.c.latest_seq)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.customer_id, table.c.meter_id, table.c.hour],
        set_={
            "event_count": table.c.event_count + new.event_count,
            "value_sum": decimal_add(dialect, table.c.value_sum, new.value_sum),
            "value_max": decimal_max(dialect, table.c.value_max, new.value_max),
            "latest_value": sa.case((newer, new.latest_value), else_=table.c.latest_value),
            "latest_at": sa.case((newer, new.latest_at), else_=table.c.latest_at),
            "latest_seq": sa.case((newer, new.latest_seq), else_=table.c.latest_seq),
        },
    )
