"""A customer's tax settings: address, tax_exempt, tax ids, tax rates, and the low-balance
threshold beside them; each checked before anything changes."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.customers.models import Customer
from billing.customers.schemas import CustomerCreate, CustomerPatch
from billing.tenants import addresses, tax_ids, tax_rates

MAX_THRESHOLD = 10**15


async def new_tax_settings(session: AsyncSession, tenant_id: str, data: CustomerCreate) -> dict[str, Any]:
    """The tax columns of a new customer."""
    columns: dict[str, Any] = {
        "address": addresses.stored_address("address", data.address),
        "tax_exempt": data.tax_exempt,
        "tax_ids": tax_ids.tax_ids("tax_ids", data.tax_ids or []),
        "tax_rates": await _tax_rates(session, tenant_id, data.tax_rates, attached=()),
        "credit_balance_low_threshold": _threshold(data.credit_balance_low_threshold),
    }
    tax_ids.check_countries("tax_ids", columns["tax_ids"], addresses.address_country(columns["address"]))
    return columns


async def tax_setting_changes(
    session: AsyncSession, customer: Customer, patch: CustomerPatch
) -> dict[str, Any]:
    """The tax columns a patch changes; the tax ids are checked against the address as it will be."""
    changes: dict[str, Any] = {}
    if patch.address is not UNSET:
        changes["address"] = addresses.stored_address("address", patch.address)
    if patch.tax_exempt is not UNSET:
        changes["tax_exempt"] = patch.tax_exempt
    if patch.tax_ids is not UNSET:
        changes["tax_ids"] = tax_ids.tax_ids("tax_ids", patch.tax_ids or [])
    if patch.tax_rates is not UNSET:
        changes["tax_rates"] = await _tax_rates(
            session, customer.tenant_id, patch.tax_rates, attached=customer.tax_rates or ()
        )
    if patch.credit_balance_low_threshold is not UNSET:
        changes["credit_balance_low_threshold"] = _threshold(patch.credit_balance_low_threshold)
    if "address" in changes or "tax_ids" in changes:
        address = changes.get("address", customer.address)
        tax_ids.check_countries(
            "tax_ids", changes.get("tax_ids", customer.tax_ids), addresses.address_country(address)
        )
    return changes


async def _tax_rates(
    session: AsyncSession, tenant_id: str, ids: list[str] | None, *, attached: Collection[str]
) -> list[str] | None:
    if ids is None:
        return None
    return await tax_rates.attachable(session, tenant_id, "tax_rates", ids, attached=attached)


def _threshold(value: int | None) -> int | None:
    return (
        None
        if value is None
        else validation.int_range("credit_balance_low_threshold", value, 0, MAX_THRESHOLD)
    )
