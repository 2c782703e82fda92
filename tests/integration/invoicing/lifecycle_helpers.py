"""Helpers for the subscription lifecycle tests: a shop with plans and customers, requests, and
the independent amount oracle (base fee x seats x seconds / seconds of the local month)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from billing.core import outbox
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import TenantHandle

BASIC_FEE, PRO_FEE = 3000, 10000
BASIC_UNIT, PRO_UNIT = Decimal(1), Decimal(2)
UNIT_PRICE = {"basic": BASIC_UNIT, "pro": PRO_UNIT, "trial": BASIC_UNIT}
BASE_FEE = {"basic": BASIC_FEE, "pro": PRO_FEE, "trial": BASIC_FEE}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The oracle


def month_of(moment: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local calendar month holding ``moment`` (midnight exists on
    the 1st in every zone used here)."""
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    first = datetime(local.year, local.month, 1, tzinfo=zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return first.astimezone(UTC), datetime(year, month, 1, tzinfo=zone).astimezone(UTC)


def prorated(base_fee: int, quantity: int, start: datetime, end: datetime, timezone: str) -> int:
    month_start, month_end = month_of(start, timezone)
    assert month_start <= start < end <= month_end
    covered = Decimal(int((end - start).total_seconds()))
    whole = Decimal(int((month_end - month_start).total_seconds()))
    return int((Decimal(base_fee * quantity) * covered / whole).quantize(Decimal(1), ROUND_HALF_UP))


def usage_amount(quantity: Decimal, unit: Decimal) -> int:
    """``unit`` is in major units (USD: cents = x 100)."""
    return int((quantity * unit * 100).quantize(Decimal(1), ROUND_HALF_UP))


# Requests


async def request(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    method: str,
    path: str,
    body: Any = None,
    scope: Scope = Scope.ADMIN,
) -> httpx.Response:
    return await client.request(method, path, headers=tenant.headers(scope), json=body)


async def ok(
    client: httpx.AsyncClient, tenant: TenantHandle, method: str, path: str, body: Any = None, **kw: Any
) -> Any:
    response = await request(client, tenant, method, path, body, **kw)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def make_shop(client: httpx.AsyncClient, tenant: TenantHandle, timezones: dict[str, str]) -> None:
    """Meter ``units`` (sum); plans basic, pro, trial (14 days) in USD and euro in EUR."""
    await ok(client, tenant, "POST", "/v1/meters", {"key": "units", "aggregation": "sum"})
    for code, currency, trial_days in (
        ("basic", None, 0),
        ("pro", None, 0),
        ("trial", None, 14),
        ("euro", "EUR", 0),
    ):
        fee = BASE_FEE.get(code, BASIC_FEE)
        unit = str(UNIT_PRICE.get(code, BASIC_UNIT))
        plan = {
            "code": code,
            "name": code.capitalize(),
            "base_fee": fee,
            "currency": currency,
            "trial_days": trial_days,
            "prices": [{"meter": "units", "model": "per_unit", "unit_amount": unit}],
        }
        await ok(client, tenant, "POST", "/v1/plans", plan)
    for external_id, timezone in timezones.items():
        await ok(client, tenant, "POST", "/v1/customers", {"external_id": external_id, "timezone": timezone})


async def subscribe(
    client: httpx.AsyncClient, tenant: TenantHandle, customer: str, plan: str, starts_at: str, **fields: Any
) -> dict:
    body = {"customer": customer, "plan": plan, "starts_at": starts_at, **fields}
    created: dict = await ok(client, tenant, "POST", "/v1/subscriptions", body)
    return created


async def patch(client: httpx.AsyncClient, tenant: TenantHandle, sub_id: str, body: Any) -> httpx.Response:
    return await request(client, tenant, "PATCH", f"/v1/subscriptions/{sub_id}", body)


async def cancel(client: httpx.AsyncClient, tenant: TenantHandle, sub_id: str, body: Any) -> httpx.Response:
    return await request(client, tenant, "POST", f"/v1/subscriptions/{sub_id}/cancel", body)


async def fetch(client: httpx.AsyncClient, tenant: TenantHandle, sub_id: str) -> dict:
    found: dict = await ok(client, tenant, "GET", f"/v1/subscriptions/{sub_id}")
    return found


async def send(
    client: httpx.AsyncClient, tenant: TenantHandle, customer: str, events: list[tuple[str, str, int]]
) -> list[tuple[str, str | None]]:
    """Events as (id, timestamp, value); the per-event (status, code)."""
    if not events:
        return []
    body = {
        "events": [
            {"id": e, "customer": customer, "meter": "units", "timestamp": t, "value": str(v)}
            for e, t, v in events
        ]
    }
    answer = await ok(client, tenant, "POST", "/v1/events/batch", body, scope=Scope.INGEST)
    return [(r["status"], r.get("code")) for r in answer["results"]]


async def run(client: httpx.AsyncClient, tenant: TenantHandle, when: str) -> dict:
    result: dict = await ok(client, tenant, "POST", "/v1/billing/run", {"at": when})
    return result


async def invoices(client: httpx.AsyncClient, tenant: TenantHandle) -> list[dict]:
    page = await ok(client, tenant, "GET", "/v1/invoices?limit=100")
    return list(page["data"])


async def invoices_of(client: httpx.AsyncClient, tenant: TenantHandle, sub_id: str) -> list[dict]:
    return sorted(
        (i for i in await invoices(client, tenant) if i["subscription"] == sub_id),
        key=lambda i: str(i["period_start"]),
    )


def without_ids(lines: list[dict]) -> list[dict]:
    return [{key: value for key, value in line.items() if key != "id"} for line in lines]


def lines_of(invoice: dict, kind: str) -> list[dict]:
    return [line for line in invoice["lines"] if line["kind"] == kind]


def assert_total(invoice: dict) -> None:
    assert invoice["total"] == sum(line["amount"] for line in invoice["lines"])


async def outbox_messages(ctx: AppContext, prefix: str) -> list[tuple[str, dict]]:
    table = outbox.OutboxEvent.__table__
    async with ctx.database.read() as session:
        rows = await session.execute(
            sa.select(table.c.topic, table.c.payload)
            .where(table.c.consumer == outbox.FAN_OUT, table.c.topic.startswith(prefix))
            .order_by(table.c.created_at, table.c.id)
        )
        return [(row.topic, row.payload) for row in rows]
