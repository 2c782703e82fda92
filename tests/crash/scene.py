"""Setting up what the crash scenarios bill, through the tenant's API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.crash.harness import Api, stamp


async def plan(api: Api, code: str, *, base_fee: int = 0, prices: list[dict[str, Any]] | None = None) -> None:
    body = {
        "code": code,
        "name": code.title(),
        "currency": "USD",
        "base_fee": base_fee,
        "prices": prices or [],
    }
    await api.create("/v1/plans", body)


async def meter(api: Api, key: str) -> str:
    created = await api.create("/v1/meters", {"key": key, "name": key, "aggregation": "sum"})
    return str(created["id"])


async def subscribed_customers(
    api: Api,
    count: int,
    *,
    plan: str,
    starts_at: datetime,
    fields: Callable[[str], dict[str, Any]] = lambda _: {},
) -> dict[str, str]:
    """``count`` customers ``c000``... in UTC, each subscribed to ``plan`` from ``starts_at``, with
    ``fields(external_id)`` on top; returns external id -> customer id."""
    found = {}
    for n in range(count):
        external_id = f"c{n:03d}"
        body = {"external_id": external_id, "timezone": "UTC", **fields(external_id)}
        found[external_id] = (await api.create("/v1/customers", body))["id"]
        subscription = {"customer": external_id, "plan": plan, "starts_at": stamp(starts_at)}
        await api.create("/v1/subscriptions", subscription)
    return found
