"""Usage ingestion: per-event results, idempotent forever, exact, and committed before the answer.

Every event is validated on its own and resolved to its customer, meter and subscription, so
that one bad event is rejected alone; the valid ones are then committed (``commit``: insert with
ON CONFLICT DO NOTHING, duplicates told from conflicts by payload hash, rollups folded in, in one
transaction) and only then answered.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.clock import format_timestamp
from billing.core.db.engine import Database
from billing.customers.archived import archived_among
from billing.customers.service import customers_by_reference
from billing.metering import groups, rollups
from billing.metering.commit import Batch, Candidate, EventResult, commit
from billing.metering.coverage import Coverage, CoverageSource, FeeRule, covering
from billing.metering.event_store import NewEvent
from billing.metering.meters import meters_by_key
from billing.metering.usage_models import UNIQUE_VALUE_MAX_LENGTH

MAX_BATCH = 1000
MAX_PROPERTIES_BYTES = 4096
FUTURE_TOLERANCE = timedelta(minutes=5)
# Events validated between turns given back to the event loop: a commit waiting there for its
# next statement is then held up by a fraction of a millisecond, not by a whole batch's checks.
YIELD_EVERY = 64


# Untracked by the garbage collector (gc=False): they hold no reference cycles, and a batch makes
# thousands of them.
class EventIn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    meter: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    value: Decimal = Decimal(1)
    properties: dict[str, Any] | None = None


class _WrittenValue(msgspec.Struct):
    """An event's value as its JSON has it, for the message that rejects it."""

    value: msgspec.Raw


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class IngestResult(msgspec.Struct):
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    results: list[EventResult]


_event_decoder = msgspec.json.Decoder(EventIn)
_raw_id_decoder = msgspec.json.Decoder(dict[str, Any])
_written_value_decoder = msgspec.json.Decoder(_WrittenValue)
# Payload hashes compare what an event means, so properties are hashed with sorted keys.
_payload_encoder = msgspec.json.Encoder(order="sorted")
_json = msgspec.json.Encoder()


class Rejection(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def ingest(
    database: Database,
    tenant_id: str,
    raw_events: Sequence[bytes],
    *,
    now: datetime,
    coverage: CoverageSource,
) -> IngestResult:
    """Validate, then store in one write transaction; the answer is sent only after the commit.

    ``coverage`` tells which subscription covers each event (invoicing's, wired at the edge).
    """
    results: list[EventResult | None] = [None] * len(raw_events)
    decoded: list[tuple[int, EventIn, str | None]] = []
    latest = now + FUTURE_TOLERANCE
    for index, raw in enumerate(raw_events):
        if index % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        try:
            decoded.append((index, *_decode(raw, latest)))
        except Rejection as rejection:
            results[index] = _rejected(index, _raw_id(raw), rejection)

    # Customers and meters are never deleted, so they can be looked up before the write lock.
    async with database.read() as session:
        candidates = await _resolve(session, tenant_id, decoded, results, coverage)
    if candidates:
        await commit(database, Batch(tenant_id, now, candidates, results, coverage))
    return _summary([r for r in results if r is not None])


def _summary(results: list[EventResult]) -> IngestResult:
    counts = {
        status: sum(1 for r in results if r.status == status)
        for status in ("accepted", "duplicate", "conflict")
    }
    return IngestResult(
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        conflicts=counts["conflict"],
        rejected=len(results) - sum(counts.values()),
        results=results,
    )


@dataclass(frozen=True)
class MeterSpec:
    id: str
    key: str
    aggregation: str
    unique_property: str | None
    group_by: tuple[str, ...]
    allow_negative: bool


# Customers and meters are never deleted and their ids, external_ids, keys, aggregations, group_by
# and allow_negative never change, so a resolved reference stays right for the life of the
# process. Unknown references are not remembered: they may be created at any moment.
_CACHE_LIMIT = 200_000
_customer_ids: dict[tuple[str, str], str] = {}
_meters: dict[tuple[str, str], MeterSpec] = {}
V = TypeVar("V")


async def _lookup(
    cache: dict[tuple[str, str], V],
    tenant_id: str,
    refs: set[str],
    fetch: Callable[[set[str]], Awaitable[dict[str, V]]],
) -> dict[str, V]:
    found = {ref: cache[(tenant_id, ref)] for ref in refs if (tenant_id, ref) in cache}
    missing = refs - found.keys()
    if missing:
        fetched = await fetch(missing)
        if len(cache) + len(fetched) > _CACHE_LIMIT:
            cache.clear()
        cache.update({(tenant_id, ref): value for ref, value in fetched.items()})
        found.update(fetched)
    return found


async def _meter_specs(session: AsyncSession, tenant_id: str, keys: set[str]) -> dict[str, MeterSpec]:
    meters = await meters_by_key(session, tenant_id, keys)
    return {
        key: MeterSpec(m.id, m.key, m.aggregation, m.unique_property, tuple(m.group_by), m.allow_negative)
        for key, m in meters.items()
    }


def _decode(raw: bytes, latest: datetime) -> tuple[EventIn, str | None]:
    """The event and its properties as JSON text, or the reason it is rejected."""
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        code = "invalid_value" if message.endswith("`$.value`") else "invalid_event"
        raise Rejection(code, message) from None
    except msgspec.DecodeError as exc:
        raise Rejection("invalid_event", str(exc)) from None
    try:
        event.value = money.parse_decimal(event.value)
    except money.InvalidDecimal as exc:
        raise Rejection("invalid_value", f"{_written_value(raw)} {exc.reason}") from None
    if event.timestamp > latest:
        raise Rejection("timestamp_in_future", "timestamp is more than 5 minutes ahead of the server's clock")
    properties = None if event.properties is None else _json.encode(event.properties)
    if properties is not None and len(properties) > MAX_PROPERTIES_BYTES:
        raise Rejection("invalid_event", f"properties exceed {MAX_PROPERTIES_BYTES} bytes")
    # JSON can only carry a NUL escaped, so raw bytes without the escape need no walk.
    if b"\\u0000" in raw and _has_nul((event.id, event.customer, event.meter, event.properties)):
        # PostgreSQL stores no NUL in text or jsonb: refuse it on both databases, per event.
        raise Rejection("invalid_event", "text may not contain the NUL character (U+0000)")
    return event, None if properties is None else properties.decode()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def _written_value(raw: bytes) -> str:
    """The value as the user wrote it: a JSON number's text (``1e30``, which the Decimal would show
    as ``1E+30``), or a JSON string's content (``NaN``)."""
    text = bytes(_written_value_decoder.decode(raw).value)
    return msgspec.json.decode(text, type=str) if text.startswith(b'"') else text.decode()


def _raw_id(raw: bytes) -> str | None:
    try:
        value = _raw_id_decoder.decode(raw).get("id")
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, str) else None


def _rejected(index: int, event_id: str | None, rejection: Rejection) -> EventResult:
    return EventResult(index, event_id, "rejected", rejection.code, rejection.message)


async def _resolve(
    session: AsyncSession,
    tenant_id: str,
    decoded: list[tuple[int, EventIn, str | None]],
    results: list[EventResult | None],
    coverage: CoverageSource,
) -> list[Candidate]:
    customers = await _lookup(
        _customer_ids,
        tenant_id,
        {e.customer for _, e, _ in decoded},
        lambda refs: customers_by_reference(session, tenant_id, refs),
    )
    meters = await _lookup(
        _meters,
        tenant_id,
        {e.meter for _, e, _ in decoded},
        lambda keys: _meter_specs(session, tenant_id, keys),
    )
    # Archiving and subscriptions change: never cached, read once per batch.
    customer_ids = set(customers.values())
    archived = await archived_among(session, customer_ids)
    subscriptions = await coverage.coverages(session, tenant_id, customer_ids)
    plan_ids = {c.plan_id for found in subscriptions.values() for c in found if c.plan_id is not None}
    fee_rules = await coverage.fee_rules(session, plan_ids) if plan_ids else {}
    candidates = []
    for index, event, properties in decoded:
        if index % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        customer = customers.get(event.customer)
        try:
            candidates.append(
                _candidate(
                    index,
                    event,
                    properties,
                    customer,
                    customer in archived,
                    meters.get(event.meter),
                    subscriptions.get(customer or "", []),
                    fee_rules,
                )
            )
        except Rejection as rejection:
            results[index] = _rejected(index, event.id, rejection)
    return candidates


def _candidate(
    index: int,
    event: EventIn,
    properties: str | None,
    customer: str | None,
    archived: bool,
    meter: MeterSpec | None,
    subscriptions: list[Coverage],
    fee_rules: dict[str, dict[str, FeeRule]],
) -> Candidate:
    if customer is None:
        raise Rejection("unknown_customer", f"no customer '{event.customer}'")
    if archived:
        raise Rejection("customer_archived", f"customer '{event.customer}' is archived")
    if meter is None:
        raise Rejection("unknown_meter", f"no meter '{event.meter}'")
    timestamp = event.timestamp.astimezone(UTC)
    subscription = covering(subscriptions, timestamp)
    if subscription is None:
        raise Rejection(
            "no_subscription",
            f"no subscription of customer '{event.customer}' covers {format_timestamp(timestamp)}",
        )
    value = event.value
    if value < 0 and not meter.allow_negative:
        raise Rejection("negative_value", f"meter '{meter.key}' takes no negative values")
    group_key, period_start = groups.NO_GROUP, None
    values: groups.GroupValues = ()
    if meter.group_by:
        try:
            values = groups.group_values(event.properties, meter.group_by)
        except groups.InvalidGroupValue as exc:
            raise Rejection("invalid_event", str(exc)) from None
        group_key = groups.encode(values)
        period_start = subscription.period_start(timestamp)
    rule = fee_rules[subscription.plan_id].get(meter.id) if subscription.plan_id in fee_rules else None
    # msgspec writes a UTC datetime as format_timestamp does, and canonical decimals print as
    # format_decimal does: the hash of an event stays what it was when it was first stored.
    payload = (customer, meter.id, timestamp, format(value, "f"), event.properties)
    digest = hashlib.blake2b(_payload_encoder.encode(payload), digest_size=16).hexdigest()
    row = NewEvent(
        event.id,
        customer,
        meter.id,
        timestamp,
        value,
        properties,
        digest,
        _unique_value(event, meter),
        group_key,
        None if rule is None else rule(values, value),
    )
    return Candidate(index, row, subscription, period_start)


def _unique_value(event: EventIn, meter: MeterSpec) -> str | None:
    if meter.aggregation != "unique_count":
        return None
    prop = meter.unique_property or ""
    raw = (event.properties or {}).get(prop)
    if raw is None:
        raise Rejection(
            "invalid_event", f"meter '{meter.key}' counts distinct properties.{prop}, which is missing"
        )
    value = rollups.unique_key(raw)
    if len(value) > UNIQUE_VALUE_MAX_LENGTH:
        raise Rejection(
            "invalid_event", f"properties.{prop} is longer than {UNIQUE_VALUE_MAX_LENGTH} characters"
        )
    return value
