"""Plan, subscription and invoice shapes on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.core import money
from billing.invoicing.models import Invoice, InvoiceLine, InvoiceStatusChange, Plan, Subscription
from billing.invoicing.periods import Period

if TYPE_CHECKING:
    from billing.invoicing.lines import LineDraft  # lines -> plans -> schemas: typing only

# Decimal strings on the wire; JSON numbers are accepted too and read exactly (never as floats).
DecimalText = str | int


class TierIn(msgspec.Struct, forbid_unknown_fields=True):
    up_to: DecimalText | None
    unit_amount: DecimalText = "0"
    flat_amount: int = 0


class PriceIn(msgspec.Struct, forbid_unknown_fields=True):
    meter: str
    model: Literal["per_unit", "graduated", "volume", "package", "percentage"]
    unit_amount: DecimalText | None = None
    tiers: list[TierIn] | None = None
    package_size: DecimalText | None = None
    package_amount: int | None = None
    # Floor and cap of the sum of the price's lines per period, minor units (prorated).
    minimum_amount: int | None = None
    maximum_amount: int | None = None
    # Dimensions: keys of the meter's group_by, each with the values an event must have one of;
    # and the keys (of the meter's group_by) whose value combinations get a line each.
    filters: dict[str, list[str]] | None = None
    group_by: list[str] | None = None
    # The percentage model: percent of each event's value plus a fixed amount per event.
    rate: DecimalText | None = None
    fixed_amount_per_event: int | None = None
    free_units: int | None = None
    minimum_per_event: int | None = None
    maximum_per_event: int | None = None


class PlanCreate(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    name: str | None = None
    currency: str | None = None
    interval: Literal["month"] = "month"
    base_fee: int = 0
    prices: list[PriceIn] = msgspec.field(default_factory=list)
    trial_days: int = 0
    # The commitment per full period, minor units; a period billing less is topped up to it.
    minimum_amount: int | None = None
    # Progressive billing: a threshold invoice each time a period's usage passes a multiple of it.
    threshold_amount: int | None = None


class PlanPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only while no subscription uses the plan (409 afterwards): create a new code instead."""

    name: str | UnsetType = UNSET
    base_fee: int | UnsetType = UNSET
    prices: list[PriceIn] | UnsetType = UNSET
    minimum_amount: int | UnsetType | None = UNSET
    threshold_amount: int | UnsetType | None = UNSET


class TierOut(msgspec.Struct):
    up_to: str | None
    unit_amount: str
    flat_amount: int


class PriceOut(msgspec.Struct, omit_defaults=True):
    meter: str
    meter_id: str
    model: str
    # Always shown, null when unset (no defaults: omit_defaults leaves them in).
    minimum_amount: int | None
    maximum_amount: int | None
    filters: dict[str, list[str]]
    group_by: list[str]
    unit_amount: str | None = None
    tiers: list[TierOut] | None = None
    package_size: str | None = None
    package_amount: int | None = None
    rate: str | None = None
    fixed_amount_per_event: int | None = None
    free_units: int | None = None
    minimum_per_event: int | None = None
    maximum_per_event: int | None = None


class PlanOut(msgspec.Struct):
    id: str
    code: str
    name: str
    currency: str
    interval: str
    base_fee: int
    prices: list[PriceOut]
    trial_days: int
    minimum_amount: int | None
    threshold_amount: int | None
    created_at: datetime
    updated_at: datetime
    object: str = "plan"


# RFC 3339 with an offset: a time without one is ambiguous, so it is a 422.
AwareDateTime = Annotated[datetime, msgspec.Meta(tz=True)]


class SubscriptionCreate(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    plan: str
    starts_at: AwareDateTime | None = None
    quantity: int = 1
    # Overrides the plan's trial_days; 0 = no trial.
    trial_days: int | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class CancelIn(msgspec.Struct, forbid_unknown_fields=True):
    """``when`` now or at the end of the current period; ``at`` (an instant, null = now) as before."""

    when: Literal["now", "period_end"] | UnsetType = UNSET
    at: AwareDateTime | UnsetType | None = UNSET


class SubscriptionPatch(msgspec.Struct, forbid_unknown_fields=True):
    plan: str | UnsetType = UNSET
    quantity: int | UnsetType = UNSET
    # "now", "period_end" or an RFC 3339 instant inside the current period (a backdated change).
    when: str = "now"
    metadata: dict[str, str] | UnsetType = UNSET
    cancel_at_period_end: bool | UnsetType = UNSET
    # An RFC 3339 instant in the future, or "now" to end the trial.
    trial_end: str | UnsetType = UNSET


class PendingChangeOut(msgspec.Struct):
    plan: str
    plan_code: str
    quantity: int
    effective_at: datetime


class SubscriptionOut(msgspec.Struct):
    id: str
    customer: str
    customer_external_id: str
    plan: str
    plan_code: str
    quantity: int
    metadata: dict[str, str]
    status: str
    timezone: str
    starts_at: datetime
    trial_start: datetime | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    pending_change: PendingChangeOut | None
    replaces: str | None
    replaced_by: str | None
    created_at: datetime
    object: str = "subscription"


class TierLineOut(msgspec.Struct):
    up_to: str | None
    quantity: str
    unit_amount: str
    flat_amount: int
    amount: int


class DiscountAmountOut(msgspec.Struct):
    discount: str | None
    amount: int


class TaxAmountOut(msgspec.Struct):
    tax_rate: str
    amount: int
    taxable_amount: int
    inclusive: bool


class TotalTaxAmountOut(msgspec.Struct):
    tax_rate: str
    amount: int
    inclusive: bool


class LineOut(msgspec.Struct):
    id: str | None
    kind: str
    meter: str | None
    description: str
    quantity: str
    amount: int
    period_start: datetime
    period_end: datetime
    tiers: list[TierLineOut]
    discount_amounts: list[DiscountAmountOut]
    tax_amounts: list[TaxAmountOut]
    invoice_item: str | None = None
    discount: str | None = None
    # Set by dimensional pricing: the plan's price index and the line's group.
    price: int | None = None
    group: dict[str, str | None] | None = None
    unpriced_quantity: str | None = None


class StatusChangeOut(msgspec.Struct):
    status: str
    at: datetime
    actor: str


class PaymentOut(msgspec.Struct):
    id: str
    invoice: str
    customer: str
    status: str
    amount: int
    currency: str
    attempt: int
    reason: str
    provider: str
    provider_payment_id: str | None
    payment_method: str | None
    failure_code: str | None
    decline_code: str | None
    decline_type: str | None
    failure_message: str | None
    created_at: datetime
    completed_at: datetime | None
    flagged_at: datetime | None
    object: str = "payment"


class RefundOut(msgspec.Struct):
    id: str
    invoice: str
    payment: str
    status: str
    amount: int
    currency: str
    provider_refund_id: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    completed_at: datetime | None
    flagged_at: datetime | None
    object: str = "refund"


class InvoiceOut(msgspec.Struct):
    id: str | None
    number: str | None
    status: str
    customer: str
    customer_external_id: str
    subscription: str | None
    billing_reason: str
    # The multiple of the plan's threshold_amount a threshold invoice was made at; else null.
    threshold_multiple: int | None
    currency: str
    period_start: datetime
    period_end: datetime
    lines: list[LineOut]
    subtotal: int
    discount_total: int
    total_excluding_tax: int
    tax_total: int
    total_tax_amounts: list[TotalTaxAmountOut]
    total: int
    credits_applied: int
    pre_payment_credit_notes_amount: int
    post_payment_credit_notes_amount: int
    amount_paid: int
    amount_due: int
    amount_refunded: int
    created_at: datetime | None
    finalized_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    marked_uncollectible_at: datetime | None
    overdue: bool
    memo: str | None
    metadata: dict[str, str]
    tax_exempt: str
    customer_address: dict[str, Any] | None
    customer_tax_ids: list[dict[str, Any]]
    legal_notes: list[str]
    status_transitions: list[StatusChangeOut]
    payments: list[PaymentOut]
    refunds: list[RefundOut]
    credit_notes: list[str] = msgspec.field(default_factory=list)
    # Hosted pages and PDFs come with customer pages; null until then.
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None
    object: str = "invoice"


def plan_out(plan: Plan) -> PlanOut:
    return PlanOut(
        id=plan.id,
        code=plan.code,
        name=plan.name,
        currency=plan.currency,
        interval=plan.interval,
        base_fee=plan.base_fee,
        prices=[price_out(p) for p in plan.prices],
        trial_days=plan.trial_days or 0,
        minimum_amount=plan.minimum_amount,
        threshold_amount=plan.threshold_amount,
        created_at=plan.created_at,
        updated_at=plan.updated_at,
    )


def price_out(stored: dict[str, Any]) -> PriceOut:
    tiers = stored.get("tiers")
    return PriceOut(
        meter=stored["meter"],
        meter_id=stored["meter_id"],
        model=stored["model"],
        minimum_amount=stored.get("minimum_amount"),
        maximum_amount=stored.get("maximum_amount"),
        filters=dict(stored.get("filters") or {}),
        group_by=list(stored.get("group_by") or []),
        unit_amount=stored.get("unit_amount"),
        tiers=[TierOut(t["up_to"], t["unit_amount"], t["flat_amount"]) for t in tiers] if tiers else None,
        package_size=stored.get("package_size"),
        package_amount=stored.get("package_amount"),
        rate=stored.get("rate"),
        fixed_amount_per_event=stored.get("fixed_amount_per_event"),
        free_units=stored.get("free_units"),
        minimum_per_event=stored.get("minimum_per_event"),
        maximum_per_event=stored.get("maximum_per_event"),
    )


@dataclass(frozen=True)
class Labels:
    """What a subscription's answer shows of its customer and plan."""

    customer_external_id: str
    plan_code: str


def subscription_out(
    subscription: Subscription,
    label: Labels,
    state: SubscriptionState,
) -> SubscriptionOut:
    """The subscription as of one instant, whose status, period, seats and pending change
    ``state`` holds."""
    canceled = subscription.end_reason == "canceled"
    return SubscriptionOut(
        id=subscription.id,
        customer=subscription.customer_id,
        customer_external_id=label.customer_external_id,
        plan=subscription.plan_id,
        plan_code=label.plan_code,
        quantity=state.quantity,
        metadata=dict(subscription.metadata_ or {}),
        status=state.status,
        timezone=subscription.timezone,
        starts_at=subscription.starts_at,
        trial_start=subscription.starts_at if subscription.trial_end else None,
        trial_end=subscription.trial_end,
        current_period_start=state.current.start if state.current else None,
        current_period_end=state.current.end if state.current else None,
        cancel_at=subscription.cancel_at if canceled else None,
        cancel_at_period_end=bool(subscription.cancel_at_period_end),
        canceled_at=subscription.canceled_at,
        ended_at=state.ended_at,
        pending_change=state.pending_change,
        replaces=subscription.replaces,
        replaced_by=subscription.replaced_by,
        created_at=subscription.created_at,
    )


@dataclass(frozen=True)
class SubscriptionState:
    status: str
    current: Period | None
    quantity: int
    ended_at: datetime | None
    pending_change: PendingChangeOut | None


def status_change_out(change: InvoiceStatusChange) -> StatusChangeOut:
    return StatusChangeOut(change.status, change.at, change.actor)


def invoice_out(
    invoice: Invoice,
    lines: list[LineOut],
    changes: list[StatusChangeOut],
    external_id: str,
    *,
    payments: list[PaymentOut] | None = None,
    refunds: list[RefundOut] | None = None,
    now: datetime | None = None,
) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.id,
        number=invoice.number,
        status=invoice.status,
        customer=invoice.customer_id,
        customer_external_id=external_id,
        subscription=invoice.subscription_id,
        billing_reason=invoice.billing_reason or "subscription_cycle",
        threshold_multiple=invoice.threshold_multiple,
        currency=invoice.currency,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        lines=lines,
        subtotal=invoice.subtotal,
        discount_total=invoice.discount_total or 0,
        total_excluding_tax=invoice.total_excluding_tax or 0,
        tax_total=invoice.tax_total or 0,
        total_tax_amounts=[TotalTaxAmountOut(**tax) for tax in invoice.total_tax_amounts or []],
        total=invoice.total,
        credits_applied=invoice.credits_applied or 0,
        pre_payment_credit_notes_amount=invoice.pre_payment_credit_notes_amount or 0,
        post_payment_credit_notes_amount=invoice.post_payment_credit_notes_amount or 0,
        amount_paid=invoice.amount_paid,
        amount_due=invoice.amount_due,
        amount_refunded=invoice.amount_refunded or 0,
        created_at=invoice.created_at,
        finalized_at=invoice.finalized_at,
        due_at=invoice.due_at,
        paid_at=invoice.paid_at,
        voided_at=invoice.voided_at,
        marked_uncollectible_at=invoice.marked_uncollectible_at,
        overdue=is_overdue(invoice, now),
        memo=invoice.memo,
        metadata=dict(invoice.metadata_ or {}),
        tax_exempt=invoice.tax_exempt or "none",
        customer_address=invoice.customer_address,
        customer_tax_ids=list(invoice.customer_tax_ids or []),
        legal_notes=list(invoice.legal_notes or []),
        status_transitions=changes,
        payments=payments or [],
        refunds=refunds or [],
        credit_notes=list(invoice.credit_note_ids or []),
    )


def is_overdue(invoice: Invoice, now: datetime | None) -> bool:
    """Open with something due and past its due date at ``now``. Without a ``now`` (a snapshot
    taken where no clock is at hand), overdue once the overdue job has noticed it."""
    if invoice.status != "open" or invoice.amount_due <= 0 or invoice.due_at is None:
        return False
    if now is None:
        return invoice.overdue_notified_at is not None
    return now > invoice.due_at


def line_out(line: InvoiceLine, meter_key: str | None) -> LineOut:
    return LineOut(
        id=line.public_id,
        kind=line.kind,
        meter=meter_key,
        description=line.description,
        quantity=money.format_decimal(line.quantity),
        amount=line.amount,
        period_start=line.period_start,
        period_end=line.period_end,
        tiers=[TierLineOut(**tier) for tier in line.tiers],
        discount_amounts=[DiscountAmountOut(**share) for share in line.discount_amounts or []],
        tax_amounts=[TaxAmountOut(**tax) for tax in line.tax_amounts or []],
        invoice_item=line.invoice_item_id,
        discount=line.discount_id,
        price=line.price_index,
        group=line.group_values,
        unpriced_quantity=None
        if line.unpriced_quantity is None
        else money.format_decimal(line.unpriced_quantity),
    )


def draft_line_out(line: LineDraft, meter_key: str | None) -> LineOut:
    return line_out(
        InvoiceLine(
            kind=line.kind,
            meter_id=line.meter_id,
            description=line.description,
            quantity=line.quantity,
            amount=line.amount,
            period_start=line.period_start,
            period_end=line.period_end,
            tiers=line.tiers,
            invoice_item_id=line.invoice_item_id,
            discount_amounts=line.discount_amounts,
            tax_amounts=line.tax_amounts,
            discount_id=line.discount_id,
            price_index=line.price_index,
            group_values=line.group,
            unpriced_quantity=line.unpriced_quantity,
        ),
        meter_key,
    )
