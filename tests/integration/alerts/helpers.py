"""A tenant with a metered plan, and calls for alerts, events and billing runs."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_invoice_lifecycle import call

NOW = "2026-11-21T12:00:00Z"  # the frozen clock
PERIOD = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
# api_calls: graduated, with a floor of $20 that spend never counts; storage: $0.0333 a unit,
# capped at $5 a period, which spend does count.
PRO_PRICES = [
    {
        "meter": "api_calls",
        "model": "graduated",
        "tiers": [
            {"up_to": "1000", "unit_amount": "0.004"},
            {"up_to": None, "unit_amount": "0.0015", "flat_amount": 50},
        ],
        "minimum_amount": 2000,
    },
    {"meter": "storage", "model": "per_unit", "unit_amount": "0.0333", "maximum_amount": 500},
]
_counter = iter(range(1, 10**9))


async def set_up(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    customers: tuple[str, ...] = ("acme",),
    *,
    currency: str = "USD",
    starts_at: str = PERIOD[0],
) -> None:
    """Meters api_calls (sum) and storage (sum), plan pro-<currency> and its subscribers."""
    for key in ("api_calls", "storage"):
        response = await client.post(
            "/v1/meters",
            headers=tenant.headers(),
            json={"key": key, "aggregation": "sum", "name": key.replace("_", " ").title()},
        )
        assert response.status_code in (201, 409), response.text
    plan = {"code": f"pro-{currency}", "currency": currency, "base_fee": 4900, "prices": PRO_PRICES}
    await call(client, tenant, "/v1/plans", plan, status=201)
    for external_id in customers:
        body = {
            "external_id": external_id,
            "email": f"{external_id}@example.com",
            "name": external_id.title(),
            "currency": currency,
            "timezone": "UTC",
        }
        await call(client, tenant, "/v1/customers", body, status=201)
        sub = {"customer": external_id, "plan": f"pro-{currency}", "starts_at": starts_at}
        await call(client, tenant, "/v1/subscriptions", sub, status=201)


async def events(
    client: httpx.AsyncClient, tenant: TenantHandle, customer: str, *items: tuple[str, str, str]
) -> None:
    """(meter, value, timestamp) events, all accepted."""
    body = {
        "events": [
            {"id": f"e{next(_counter)}", "customer": customer, "meter": m, "value": v, "timestamp": t}
            for m, v, t in items
        ]
    }
    result = await call(client, tenant, "/v1/events/batch", body, scope=Scope.INGEST)
    assert result["accepted"] == len(items), result


async def create_alert(client: httpx.AsyncClient, tenant: TenantHandle, **body: Any) -> dict[str, Any]:
    return await call(client, tenant, "/v1/alerts", body, status=201)


async def triggers(client: httpx.AsyncClient, tenant: TenantHandle, alert_id: str) -> list[dict[str, Any]]:
    page = await call(
        client, tenant, f"/v1/alerts/{alert_id}/triggers?limit=100", method="GET", scope=Scope.FINANCE
    )
    return list(page["data"])


async def run(client: httpx.AsyncClient, tenant: TenantHandle, at: str = NOW) -> dict[str, Any]:
    return await call(client, tenant, "/v1/billing/run", {"at": at})


async def emails(client: httpx.AsyncClient, tenant: TenantHandle) -> list[dict[str, Any]]:
    page = await call(
        client, tenant, "/v1/notifications?kind=usage_alert&limit=100", method="GET", scope=Scope.FINANCE
    )
    return list(page["data"])


# --- the oracle: the plan's prices, in Decimal, independent of billing/ --------------------------


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def api_calls_cents(quantity: Decimal) -> int:
    """Graduated: 0.004 for the first 1000, 0.0015 beyond plus a 50-cent flat fee; rounded once."""
    first = min(quantity, Decimal(1000)) * Decimal("0.004") * 100
    rest = max(quantity - 1000, Decimal(0))
    beyond = rest * Decimal("0.0015") * 100 + (50 if rest > 0 else 0)
    return half_up(first + beyond)


def storage_cents(quantity: Decimal) -> int:
    """Per unit at 0.0333, capped at 500 cents a full month."""
    return min(half_up(quantity * Decimal("0.0333") * 100), 500)
