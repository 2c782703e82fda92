"""Coupon verbs; a session is the first argument, no HTTP in here.

A coupon is addressed by its ``cpn_`` id or its code (the id wins). Its code stays taken after
it is deleted: the discounts made from it still name it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money, validation
from billing.core.clock import ensure_utc
from billing.core.db.inserts import insert_row_ignore
from billing.core.db.queries import find_by_id_or_key
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.invoicing.coupon_models import Coupon
from billing.invoicing.coupon_schemas import CouponCreate, CouponOut, CouponPatch, coupon_out
from billing.invoicing.models import Plan
from billing.invoicing.plans import get_plan

CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PERIODS = 120
MAX_AMOUNT_OFF = 10**15
MAX_REDEMPTIONS = 2**31 - 1
MAX_PLANS = 100


async def create_coupon(
    session: AsyncSession, tenant_id: str, data: CouponCreate, *, now: datetime
) -> Coupon:
    """Validate every field, then insert; a code the tenant already has is a Conflict."""
    if not CODE_PATTERN.fullmatch(data.code):
        raise ValidationFailed.field("code", "must be 1-64 letters, digits, '_' or '-'")
    percent_off, amount_off, currency = _off(data)
    coupon = Coupon(
        id=new_id("cpn"),
        tenant_id=tenant_id,
        code=data.code,
        name=validation.text("name", data.name if data.name is not None else data.code, max_length=200),
        percent_off=percent_off,
        amount_off=amount_off,
        currency=currency,
        duration=data.duration,
        duration_in_periods=_periods(data),
        plan_ids=await _plan_ids(session, tenant_id, data.applies_to_plans),
        max_redemptions=_max_redemptions(data.max_redemptions),
        times_redeemed=0,
        expires_at=_expires_at(data.expires_at, now),
        metadata_=validation.validate_metadata("metadata", data.metadata or {}),
        created_at=now,
        updated_at=now,
    )
    if not await insert_row_ignore(session, coupon):
        raise Conflict(f"A coupon with code '{coupon.code}' already exists")
    return coupon


async def get_coupon(session: AsyncSession, tenant_id: str, ref: str, *, lock: bool = False) -> Coupon:
    """The tenant's coupon with this id or code; ``lock``: its row is locked until commit."""
    coupon = await find_by_id_or_key(session, Coupon, tenant_id, Coupon.code, ref)
    if coupon is None:
        raise NotFound(f"No coupon {ref}")
    if lock:
        await session.refresh(coupon, with_for_update=True)
    return coupon


async def list_coupons(session: AsyncSession, tenant_id: str, page: PageRequest) -> tuple[list[Coupon], bool]:
    return await fetch_page(session, sa.select(Coupon).where(Coupon.tenant_id == tenant_id), Coupon.id, page)


async def update_coupon(
    session: AsyncSession, tenant_id: str, ref: str, patch: CouponPatch, *, now: datetime
) -> Coupon:
    """Rename it or replace its metadata, deleted or not; both are checked before either changes."""
    coupon = await get_coupon(session, tenant_id, ref, lock=True)
    name = coupon.name if patch.name is UNSET else validation.text("name", patch.name, max_length=200)
    metadata = (
        coupon.metadata_
        if patch.metadata is UNSET
        else validation.validate_metadata("metadata", patch.metadata or {})
    )
    coupon.name, coupon.metadata_, coupon.updated_at = name, metadata, now
    await session.flush()
    return coupon


async def delete_coupon(session: AsyncSession, tenant_id: str, ref: str, *, now: datetime) -> Coupon:
    """No new redemptions from now on; the discounts already made run on. Deleting again is no change."""
    coupon = await get_coupon(session, tenant_id, ref, lock=True)
    if coupon.deleted_at is None:
        coupon.deleted_at = coupon.updated_at = now
        await session.flush()
    return coupon


async def coupons_out(session: AsyncSession, coupons: Sequence[Coupon], now: datetime) -> list[CouponOut]:
    """The wire shape, with the codes of the plans the coupons name (one query)."""
    plan_ids = {plan_id for coupon in coupons for plan_id in coupon.plan_ids or ()}
    codes: dict[str, str] = {}
    if plan_ids:
        rows = await session.execute(sa.select(Plan.id, Plan.code).where(Plan.id.in_(plan_ids)))
        codes = {row.id: row.code for row in rows}
    return [coupon_out(coupon, codes, now) for coupon in coupons]


# --- field checks -----------------------------------------------------------------------------


def _off(data: CouponCreate) -> tuple[Decimal | None, int | None, str | None]:
    if (data.percent_off is None) == (data.amount_off is None):
        raise ValidationFailed.field("percent_off", "give exactly one of percent_off or amount_off")
    if data.percent_off is not None:
        if data.currency is not None:
            raise ValidationFailed.field("currency", "only an amount_off coupon has a currency")
        return _percent(data.percent_off), None, None
    assert data.amount_off is not None
    if not 0 < data.amount_off <= MAX_AMOUNT_OFF:
        raise ValidationFailed.field("amount_off", f"must be between 1 and {MAX_AMOUNT_OFF} (minor units)")
    if data.currency is None:
        raise ValidationFailed.field("currency", "is required with amount_off")
    return None, data.amount_off, validation.currency("currency", data.currency)


def _percent(value: str | int) -> Decimal:
    try:
        percent = money.parse_decimal(value, max_fraction_digits=2, max_magnitude=Decimal(1000))
    except money.InvalidDecimal as exc:
        raise ValidationFailed.field("percent_off", str(exc)) from None
    if not 0 < percent <= 100:
        raise ValidationFailed.field("percent_off", "must be above 0 and at most 100")
    return percent


def _periods(data: CouponCreate) -> int | None:
    if data.duration != "repeating":
        if data.duration_in_periods is not None:
            raise ValidationFailed.field("duration_in_periods", "is only for a repeating coupon")
        return None
    if data.duration_in_periods is None:
        raise ValidationFailed.field("duration_in_periods", "is required for a repeating coupon")
    return validation.int_range("duration_in_periods", data.duration_in_periods, 1, MAX_PERIODS)


async def _plan_ids(session: AsyncSession, tenant_id: str, refs: list[str] | None) -> list[str] | None:
    if refs is None:
        return None
    if not 1 <= len(refs) <= MAX_PLANS:
        raise ValidationFailed.field("applies_to_plans", f"must name 1 to {MAX_PLANS} plans")
    ids: list[str] = []
    for index, ref in enumerate(refs):
        try:
            plan = await get_plan(session, tenant_id, ref)
        except NotFound:
            raise ValidationFailed.field(f"applies_to_plans[{index}]", f"no plan '{ref}'") from None
        if plan.id not in ids:
            ids.append(plan.id)
    return ids


def _max_redemptions(value: int | None) -> int | None:
    return None if value is None else validation.int_range("max_redemptions", value, 1, MAX_REDEMPTIONS)


def _expires_at(value: datetime | None, now: datetime) -> datetime | None:
    if value is not None and value <= now:
        raise ValidationFailed.field("expires_at", "must be in the future")
    return None if value is None else ensure_utc(value)
