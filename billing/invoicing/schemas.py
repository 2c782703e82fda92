"""Plan, subscription and invoice shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.payments.schemas import PaymentOut, RefundOut

# Decimal strings on the wire; JSON numbers are accepted too and read exactly (never as floats).
DecimalText = str | int


class TierIn(msgspec.Struct, forbid_unknown_fields=True):
    up_to: DecimalText | None
    unit_amount: DecimalText = "0"
    flat_amount: int = 0


class PriceIn(msgspec.Struct, forbid_unknown_fields=True):
    meter: str
    model: Literal["per_unit", "graduated", "volume", "package"]
    unit_amount: DecimalText | None = None
    tiers: list[TierIn] | None = None
    package_size: DecimalText | None = None
    package_amount: int | None = None


class PlanCreate(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    name: str | None = None
    currency: str | None = None
    interval: Literal["month"] = "month"
    base_fee: int = 0
    prices: list[PriceIn] = msgspec.field(default_factory=list)


class PlanPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only while no subscription uses the plan (409 afterwards): create a new code instead."""

    name: str | UnsetType = UNSET
    base_fee: int | UnsetType = UNSET
    prices: list[PriceIn] | UnsetType = UNSET


class TierOut(msgspec.Struct):
    up_to: str | None
    unit_amount: str
    flat_amount: int


class PriceOut(msgspec.Struct, omit_defaults=True):
    meter: str
    meter_id: str
    model: str
    unit_amount: str | None = None
    tiers: list[TierOut] | None = None
    package_size: str | None = None
    package_amount: int | None = None


class PlanOut(msgspec.Struct):
    id: str
    code: str
    name: str
    currency: str
    interval: str
    base_fee: int
    prices: list[PriceOut]
    created_at: datetime
    updated_at: datetime
    object: str = "plan"


# RFC 3339 with an offset: a time without one is ambiguous, so it is a 422.
AwareDateTime = Annotated[datetime, msgspec.Meta(tz=True)]


class SubscriptionCreate(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    plan: str
    starts_at: AwareDateTime | None = None


class CancelIn(msgspec.Struct, forbid_unknown_fields=True):
    at: AwareDateTime | None = None


class SubscriptionOut(msgspec.Struct):
    id: str
    customer: str
    customer_external_id: str
    plan: str
    plan_code: str
    status: str
    timezone: str
    starts_at: datetime
    cancel_at: datetime | None
    canceled_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    created_at: datetime
    object: str = "subscription"


class TierLineOut(msgspec.Struct):
    up_to: str | None
    quantity: str
    unit_amount: str
    flat_amount: int
    amount: int


class LineOut(msgspec.Struct):
    kind: str
    meter: str | None
    description: str
    quantity: str
    amount: int
    period_start: datetime
    period_end: datetime
    tiers: list[TierLineOut]


class StatusChangeOut(msgspec.Struct):
    status: str
    at: datetime
    actor: str


class InvoiceOut(msgspec.Struct):
    id: str | None
    number: str | None
    status: str
    customer: str
    customer_external_id: str
    subscription: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: list[LineOut]
    subtotal: int
    total: int
    amount_paid: int
    amount_due: int
    amount_refunded: int
    created_at: datetime | None
    finalized_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    marked_uncollectible_at: datetime | None
    status_transitions: list[StatusChangeOut]
    payments: list[PaymentOut]
    refunds: list[RefundOut]
    object: str = "invoice"


class BillingRunIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Frozen, so that an instance may be the default of the handler's body: no body means ``{}``."""

    at: AwareDateTime | None = None


class BillingRunOut(msgspec.Struct):
    at: datetime
    invoices_created: int
    drafts_recomputed: int
    invoices_finalized: int
    payments_attempted: int
    payments_reconciled: int
    dunning_steps: int
