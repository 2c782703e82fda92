"""Coupon and discount shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.core import money
from billing.invoicing.coupon_models import Coupon, Discount
from billing.invoicing.schemas import AwareDateTime


class CouponCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of ``percent_off`` (a decimal string) or ``amount_off`` with ``currency``."""

    code: str
    duration: Literal["once", "repeating", "forever"]
    name: str | None = None
    percent_off: str | int | None = None
    amount_off: int | None = None
    currency: str | None = None
    duration_in_periods: int | None = None
    applies_to_plans: list[str] | None = None
    max_redemptions: int | None = None
    expires_at: AwareDateTime | None = None
    metadata: dict[str, str] | None = None


class CouponPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only the name and metadata change (as Stripe): what a coupon takes off is fixed."""

    name: str | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET


class CouponOut(msgspec.Struct):
    id: str
    code: str
    name: str
    percent_off: str | None
    amount_off: int | None
    currency: str | None
    duration: str
    duration_in_periods: int | None
    # Plan codes; None: every plan.
    applies_to_plans: list[str] | None
    max_redemptions: int | None
    times_redeemed: int
    expires_at: datetime | None
    # False once deleted, expired or at max_redemptions: it cannot be redeemed any more.
    valid: bool
    metadata: dict[str, str]
    deleted_at: datetime | None
    created_at: datetime
    object: str = "coupon"


class DiscountCreate(msgspec.Struct, forbid_unknown_fields=True):
    coupon: str  # its id or code


class DiscountOut(msgspec.Struct):
    id: str
    coupon: CouponOut
    customer: str
    status: str
    start: datetime
    end: datetime | None
    # The invoice a ``once`` discount was used on.
    invoice: str | None
    ended_at: datetime | None
    removed_at: datetime | None
    created_at: datetime
    object: str = "discount"


def is_valid(coupon: Coupon, now: datetime) -> bool:
    """Whether the coupon can still be redeemed at ``now``."""
    return (
        coupon.deleted_at is None
        and (coupon.expires_at is None or coupon.expires_at > now)
        and (coupon.max_redemptions is None or coupon.times_redeemed < coupon.max_redemptions)
    )


def discount_status(discount: Discount, now: datetime) -> str:
    if discount.removed_at is not None:
        return "removed"
    if discount.ended_at is not None or (discount.end is not None and discount.end <= now):
        return "ended"
    return "active"


def coupon_out(coupon: Coupon, plan_codes: dict[str, str], now: datetime) -> CouponOut:
    """``plan_codes``: the code of each plan id the coupon names."""
    return CouponOut(
        id=coupon.id,
        code=coupon.code,
        name=coupon.name,
        percent_off=None if coupon.percent_off is None else money.format_decimal(coupon.percent_off),
        amount_off=coupon.amount_off,
        currency=coupon.currency,
        duration=coupon.duration,
        duration_in_periods=coupon.duration_in_periods,
        applies_to_plans=None if coupon.plan_ids is None else [plan_codes[p] for p in coupon.plan_ids],
        max_redemptions=coupon.max_redemptions,
        times_redeemed=coupon.times_redeemed,
        expires_at=coupon.expires_at,
        valid=is_valid(coupon, now),
        metadata=dict(coupon.metadata_),
        deleted_at=coupon.deleted_at,
        created_at=coupon.created_at,
    )


def discount_out(discount: Discount, coupon: CouponOut, now: datetime) -> DiscountOut:
    return DiscountOut(
        id=discount.id,
        coupon=coupon,
        customer=discount.customer_id,
        status=discount_status(discount, now),
        start=discount.start,
        end=discount.end,
        invoice=discount.invoice_id,
        ended_at=discount.ended_at,
        removed_at=discount.removed_at,
        created_at=discount.created_at,
    )
