"""Calls and checks shared by the prepaid credit tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.models import metadata
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_invoice_lifecycle import call

CARD = {"default_payment_method": "pm_card_visa", "provider_customer_id": "cus_card"}
DECLINED = {"default_payment_method": "pm_card_chargeDeclined", "provider_customer_id": "cus_declined"}
CREDIT_TABLES = ("credit_grants", "credit_ledger_entries", "credit_balances")


async def customer(
    client: httpx.AsyncClient, tenant: TenantHandle, external_id: str, **fields: object
) -> dict:
    body = {"external_id": external_id, "timezone": "UTC", **fields}
    return await call(client, tenant, "/v1/customers", body, status=201)


async def meter(client: httpx.AsyncClient, tenant: TenantHandle, key: str) -> dict:
    return await call(client, tenant, "/v1/meters", {"key": key, "aggregation": "sum"}, status=201)


async def grant(
    client: httpx.AsyncClient, tenant: TenantHandle, customer_ref: str, *, status: int = 201, **body: object
) -> dict:
    fields = {"name": "Credit", "category": "promotional", **body}
    return await call(client, tenant, f"/v1/customers/{customer_ref}/credit-grants", fields, status=status)


async def get_grant(client: httpx.AsyncClient, tenant: TenantHandle, grant_id: str) -> dict:
    return await call(client, tenant, f"/v1/credit-grants/{grant_id}", method="GET")


async def void(client: httpx.AsyncClient, tenant: TenantHandle, grant_id: str, *, status: int = 200) -> dict:
    return await call(client, tenant, f"/v1/credit-grants/{grant_id}/void", status=status)


async def ledger(
    client: httpx.AsyncClient, tenant: TenantHandle, customer_ref: str, **params: str
) -> list[dict]:
    """Every entry, newest first, read page by page (2 a page) to walk the cursor too."""
    entries: list[dict] = []
    while True:
        query = {"limit": "2", **params} | ({"starting_after": entries[-1]["id"]} if entries else {})
        response = await client.get(
            f"/v1/customers/{customer_ref}/credit-ledger", headers=tenant.headers(), params=query
        )
        assert response.status_code == 200, response.text
        page = response.json()
        entries += page["data"]
        if not page["has_more"]:
            return entries


async def balance(client: httpx.AsyncClient, tenant: TenantHandle, customer_ref: str) -> dict:
    return await call(client, tenant, f"/v1/customers/{customer_ref}/credit-balance", method="GET")


def assert_ledger_consistent(entries_newest_first: list[dict], final_available: int) -> None:
    """Each entry moves the balance by its amount, from 0, to what the balance shows now."""
    running = 0
    for entry in reversed(entries_newest_first):
        sign = 1 if entry["type"] in ("granted", "restored") else -1
        assert entry["amount"] * sign > 0, entry
        running += entry["amount"]
        assert entry["balance_after"] == running, entry
    assert running == final_available


async def credit_rows(ctx: AppContext) -> dict[str, int]:
    async with ctx.database.read() as session:
        return {
            name: await session.scalar(sa.select(sa.func.count()).select_from(metadata.tables[name])) or 0
            for name in CREDIT_TABLES
        }


async def set_low_threshold(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    customer_ref: str,
    value: int,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> None:
    body = {"credit_balance_low_threshold": value}
    await call(client, tenant, f"/v1/customers/{customer_ref}", body, method="PATCH")


def problem_code(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json().get("code")
