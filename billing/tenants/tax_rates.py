"""Tax rates: create, read, list, change what may change; and the checks of a set of rates a
tenant or customer attaches (all of the tenant, not mixed, none newly attached inactive)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.errors import FieldError, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.tenants.addresses import country
from billing.tenants.models import TaxRate
from billing.tenants.schemas import TaxRateCreate, TaxRatePatch

DISPLAY_NAME_MAX_LENGTH = 50
JURISDICTION_MAX_LENGTH = 50
DESCRIPTION_MAX_LENGTH = 500
# A customer's own rates (as Stripe's tax_rates on a price or item); a tenant's defaults hold
# one rate per country it sells to, and more.
MAX_ATTACHED = 5
MAX_DEFAULTS = 100
# Plain notation only: no sign, exponent, leading zeros or bare point; at most 4 decimals.
_PERCENTAGE = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,4})?")


async def create_tax_rate(
    session: AsyncSession, tenant_id: str, data: TaxRateCreate, *, now: datetime
) -> TaxRate:
    rate = TaxRate(
        id=new_id("txr"),
        tenant_id=tenant_id,
        display_name=validation.text("display_name", data.display_name, max_length=DISPLAY_NAME_MAX_LENGTH),
        description=_description(data.description),
        percentage=percentage("percentage", data.percentage),
        inclusive=data.inclusive,
        country=None if data.country is None else country("country", data.country),
        jurisdiction=None
        if data.jurisdiction is None
        else validation.text("jurisdiction", data.jurisdiction, max_length=JURISDICTION_MAX_LENGTH),
        active=True,
        created_at=now,
        updated_at=now,
    )
    session.add(rate)
    await session.flush()
    return rate


def percentage(field: str, value: str) -> Decimal:
    """A decimal string from 0 to 100 with at most 4 decimals."""
    if not _PERCENTAGE.fullmatch(value) or Decimal(value) > 100:
        raise ValidationFailed.field(
            field, f"'{value}' is not a decimal string from 0 to 100 with at most 4 decimals"
        )
    return Decimal(value)


async def get_tax_rate(session: AsyncSession, tenant_id: str, rate_id: str) -> TaxRate:
    rate = await session.get(TaxRate, rate_id)
    if rate is None or rate.tenant_id != tenant_id:
        raise NotFound(f"No tax rate {rate_id}")
    return rate


async def list_tax_rates(
    session: AsyncSession, tenant_id: str, page: PageRequest, *, active: bool | None = None
) -> tuple[list[TaxRate], bool]:
    stmt = sa.select(TaxRate).where(TaxRate.tenant_id == tenant_id)
    if active is not None:
        stmt = stmt.where(TaxRate.active.is_(active))
    return await fetch_page(session, stmt, TaxRate.id, page)


async def update_tax_rate(
    session: AsyncSession, rate: TaxRate, patch: TaxRatePatch, *, now: datetime
) -> TaxRate:
    changes: dict[str, object] = {}
    if patch.display_name is not UNSET:
        changes["display_name"] = validation.text(
            "display_name", patch.display_name, max_length=DISPLAY_NAME_MAX_LENGTH
        )
    if patch.description is not UNSET:
        changes["description"] = _description(patch.description)
    if patch.active is not UNSET:
        changes["active"] = patch.active
    for attribute, value in changes.items():
        setattr(rate, attribute, value)
    rate.updated_at = now
    await session.flush()
    return rate


async def rates_by_id(session: AsyncSession, tenant_id: str, ids: Collection[str]) -> dict[str, TaxRate]:
    """The tenant's rates among ``ids``, in one query; others' and unknown ids are left out."""
    if not ids:
        return {}
    rows = await session.scalars(
        sa.select(TaxRate).where(TaxRate.tenant_id == tenant_id, TaxRate.id.in_(ids))
    )
    return {rate.id: rate for rate in rows}


async def attachable(
    session: AsyncSession,
    tenant_id: str,
    field: str,
    ids: Sequence[str],
    *,
    attached: Collection[str] = (),
    limit: int = MAX_ATTACHED,
) -> list[str]:
    """``ids`` checked as a set of rates to attach where ``attached`` are attached now: each the
    tenant's (404 otherwise, as any id of another tenant), listed once, active unless already
    attached (as Stripe: a rate deactivated while attached stays), and all inclusive or all
    exclusive (422 ``tax_rates_mixed``)."""
    if len(ids) > limit:
        raise ValidationFailed.field(field, f"at most {limit} tax rates")
    found = await rates_by_id(session, tenant_id, set(ids))
    for index, rate_id in enumerate(ids):
        where = f"{field}[{index}]"
        rate = found.get(rate_id)
        if rate is None:
            raise NotFound(
                f"{where}: no tax rate {rate_id}", errors=[FieldError(where, f"no tax rate {rate_id}")]
            )
        if rate_id in ids[:index]:
            raise ValidationFailed.field(where, f"{rate_id} is listed twice")
        if not rate.active and rate_id not in attached:
            message = f"{rate_id} is inactive and cannot be newly attached"
            raise ValidationFailed(
                f"{where}: {message}", code="tax_rate_inactive", errors=[FieldError(where, message)]
            )
    if len({found[rate_id].inclusive for rate_id in ids}) > 1:
        message = "the rates must be all inclusive or all exclusive"
        raise ValidationFailed(
            f"{field}: {message}", code="tax_rates_mixed", errors=[FieldError(field, message)]
        )
    return list(ids)


def _description(value: str | None) -> str | None:
    return None if value is None else validation.text("description", value, max_length=DESCRIPTION_MAX_LENGTH)
