"""The demo's usage events: a working-day rhythm, slow growth and some noise, in exact decimals.

Each customer-day draws from its own seeded generator, so a day's events never depend on which
other days or customers were generated. Values are built from integers only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgspec

from billing.core.clock import format_timestamp
from billing.demo.catalog import (
    AI_TOKENS,
    API_CALLS,
    DIRECTION,
    EXPORTS,
    MODEL,
    PAYMENTS,
    PLAN_METERS,
    SEATS,
    STORAGE,
)
from billing.demo.roster import Persona, seeded

DAY = timedelta(days=1)
# Share of a day's API calls in each six-hour block of the customer's local day, percent.
LOCAL_BLOCKS = [6, 30, 44, 20]
WEEKDAY_PERCENT = [100, 104, 102, 100, 92, 45, 35]
DAILY_CALLS = {"starter": 800, "growth": 9_000, "scale": 120_000}  # at size 1, x size / 10
# Tokens a day at size 10, by (model, direction): about $3.40 at the AI Platform's prices. Every
# customer uses both OpenAI models; the larger ones (size 50 and up) run two open models too.
DAILY_TOKENS = {
    ("gpt-4o", "input"): 400_000,
    ("gpt-4o", "output"): 100_000,
    ("gpt-4o-mini", "input"): 2_000_000,
    ("gpt-4o-mini", "output"): 500_000,
}
OPEN_MODELS = {"llama-3.1-70b": (300_000, 90_000), "mistral-large": (200_000, 60_000)}
TOKEN_BLOCKS = [45, 55]  # share of a day's tokens in each half of the UTC day, percent


@dataclass(frozen=True)
class Event:
    timestamp: datetime
    customer: str
    raw: bytes


def _event(
    event_id: str,
    customer: str,
    meter: str,
    timestamp: datetime,
    value: Decimal,
    properties: dict[str, str] | None = None,
) -> Event:
    body: dict[str, object] = {
        "id": event_id,
        "customer": customer,
        "meter": meter,
        "timestamp": format_timestamp(timestamp),
        "value": str(value),
    }
    if properties:
        body["properties"] = properties
    return Event(timestamp, customer, msgspec.json.encode(body))


def customer_events(persona: Persona, since: datetime, until: datetime, *, origin: datetime) -> list[Event]:
    """Every event of ``persona`` in [since, until), oldest first; ``origin`` is day 0 of growth."""
    day = since.replace(hour=0, minute=0, second=0, microsecond=0)
    events: list[Event] = []
    while day < until:
        events.extend(e for e in _day(persona, day, (day - origin).days) if since <= e.timestamp < until)
        day += DAY
    return sorted(events, key=lambda e: e.timestamp)


def late_event(persona: Persona, timestamp: datetime) -> Event:
    """One batch of API calls that a device kept offline and uploads days later."""
    value = Decimal(DAILY_CALLS[persona.plan] * persona.size // 40 + 1)
    return _event(f"{persona.external_id}:offline-sync", persona.external_id, API_CALLS, timestamp, value)


def _day(persona: Persona, day: datetime, age: int) -> Iterator[Event]:
    rng = seeded(f"{persona.external_id}:{day.date().isoformat()}")
    meters = PLAN_METERS[persona.plan]
    stamp = f"{persona.external_id}:{persona.plan}:{day:%Y%m%d}"  # a plan change's day has both
    weekday = day.weekday()
    trend = 1000 + persona.growth * age  # per mille of the first day's level
    if API_CALLS in meters:
        calls = DAILY_CALLS[persona.plan] * persona.size // 10 * WEEKDAY_PERCENT[weekday] // 100
        calls = calls * trend // 1000 * rng.randint(85, 115) // 100
        yield from _api_calls(persona, day, stamp, calls, rng)
    if STORAGE in meters:
        gb_tenths = (persona.size * 10 + age * persona.size // 8) * rng.randint(97, 103) // 100
        value = Decimal(gb_tenths * 24) / 10
        yield _event(f"{stamp}:storage", persona.external_id, STORAGE, day + timedelta(hours=23), value)
    if SEATS in meters:
        seats = 3 + persona.size // 4 + age * persona.growth // 60
        moment = day + timedelta(hours=12, minutes=rng.randint(0, 59))
        yield _event(f"{stamp}:seats", persona.external_id, SEATS, moment, Decimal(max(seats, 1)))
    if EXPORTS in meters:
        for n in range(rng.randint(0, 2 + persona.size // 10) if weekday < 5 else rng.randint(0, 1)):
            moment = day + timedelta(minutes=rng.randint(0, 24 * 60 - 1))
            yield _event(f"{stamp}:export:{n}", persona.external_id, EXPORTS, moment, Decimal(1))
    if AI_TOKENS in meters:
        yield from _tokens(persona, day, stamp, WEEKDAY_PERCENT[weekday] * trend // 100, rng)
    if PAYMENTS in meters:
        yield from _payments(persona, day, stamp, weekday, rng)


def _api_calls(
    persona: Persona, day: datetime, stamp: str, calls: int, rng: random.Random
) -> Iterator[Event]:
    """The day's calls in four uploads, each block weighted by the customer's local hour."""
    offset = day.astimezone(ZoneInfo(persona.timezone)).utcoffset() or timedelta()
    offset_hours = int(offset.total_seconds()) // 3600
    for block in range(4):
        value = calls * LOCAL_BLOCKS[((block * 6 + offset_hours) % 24) // 6] // 100
        if value > 0:
            moment = day + timedelta(hours=block * 6 + 5, minutes=rng.randint(0, 59))
            yield _event(f"{stamp}:calls:{block}", persona.external_id, API_CALLS, moment, Decimal(value))


def token_mix(persona: Persona) -> dict[tuple[str, str], int]:
    """The customer's tokens a day at its size, before rhythm, growth and noise, per (model,
    direction)."""
    daily = dict(DAILY_TOKENS)
    if persona.size >= 50:
        for model, (tokens_in, tokens_out) in OPEN_MODELS.items():
            daily[model, "input"], daily[model, "output"] = tokens_in, tokens_out
    return {key: tokens * persona.size // 10 for key, tokens in daily.items()}


def _tokens(
    persona: Persona, day: datetime, stamp: str, per_mille: int, rng: random.Random
) -> Iterator[Event]:
    """Each model and direction in two uploads, scaled by the day's rhythm and growth (per mille)."""
    for (model, direction), tokens in token_mix(persona).items():
        today = tokens * per_mille // 1000 * rng.randint(85, 115) // 100
        properties = {MODEL: model, DIRECTION: direction}
        for block, share in enumerate(TOKEN_BLOCKS):
            moment = day + timedelta(hours=block * 12 + 4, minutes=rng.randint(0, 7 * 60))
            event_id = f"{stamp}:tokens:{model}:{direction}:{block}"
            value = Decimal(today * share // 100)
            if value > 0:
                yield _event(event_id, persona.external_id, AI_TOKENS, moment, value, properties)


def _payments(
    persona: Persona, day: datetime, stamp: str, weekday: int, rng: random.Random
) -> Iterator[Event]:
    """The payments the customer's shop takes: a few a day, $15 to $1,500 (the fee's cap applies
    from about $850)."""
    count = rng.randint(1, 2 + persona.size // 20) if weekday < 5 else rng.randint(0, 1)
    for n in range(count):
        moment = day + timedelta(minutes=rng.randint(0, 24 * 60 - 1))
        amount = Decimal(rng.randint(1_500, 150_000)).scaleb(-2)  # cents to dollars, exact
        yield _event(f"{stamp}:payment:{n}", persona.external_id, PAYMENTS, moment, amount)
