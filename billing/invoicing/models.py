"""Plans, subscriptions and invoices.

A plan's prices are stored as JSON with decimal strings (exact), resolved to meter ids at
creation; plans are immutable once a subscription uses them. An invoice's lines are rows of
their own; its status changes are kept with their time and actor.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, ExactDecimal, JSONType, UTCDateTime

INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
BILLING_REASONS = (
    "subscription_cycle",
    "subscription_create",
    "subscription_update",
    "subscription_cancel",
    "threshold",
    "manual",
    "credit_grant",
)
LINE_KINDS = (
    "base_fee",
    "usage",
    "late_usage",
    "trial",
    "proration",
    "invoice_item",
    "minimum_commitment",
    "price_minimum",
    "price_maximum",
    "already_billed",
    "discount",
    "credit_purchase",
)
# A deleted item is kept (with its status) so that its id still answers.
INVOICE_ITEM_STATUSES = ("pending", "invoiced", "deleted")
END_REASONS = ("canceled", "replaced")


EMPTY_LIST = sa.text("'[]'")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    currency: Mapped[str] = mapped_column(sa.String(3))
    interval: Mapped[str] = mapped_column(sa.String(16), default="month")
    base_fee: Mapped[int] = mapped_column(sa.BigInteger)
    # Days of trial a subscription gets unless it says otherwise.
    trial_days: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # [{"meter_id", "meter", "model", "unit_amount", "tiers", "package_size", "package_amount",
    #   "minimum_amount", "maximum_amount"}]
    prices: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # The commitment per full period (minor units): a period billing less is topped up to it.
    minimum_amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    # Progressive billing: each multiple of this much usage accrued in a period is billed at once.
    threshold_amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "code"),
        sa.Index("ix_plans_tenant_id_id", "tenant_id", "id"),
        sa.CheckConstraint("base_fee >= 0", name="base_fee"),
        sa.CheckConstraint("minimum_amount >= 0", name="minimum_amount"),
        sa.CheckConstraint("threshold_amount > 0", name="threshold_amount"),
    )


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    plan_id: Mapped[str] = mapped_column(sa.ForeignKey("plans.id"))
    # Fixed at creation, so that a later change of the customer's timezone never moves a period.
    timezone: Mapped[str] = mapped_column(sa.String(64))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cancel_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # End of the last period closed into an invoice; None before the first one.
    billed_through: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # End of the next period to close; None once the last period is closed.
    next_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when an event arrives for a period already closed: its drafts must be recomputed.
    usage_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Seats: [{"from": RFC 3339, "quantity": n}] in time order, the first from starts_at; a
    # quantity change appends a segment, so a period's base fee is prorated per segment.
    quantities: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list, server_default="[]")
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict, server_default="{}")
    # The first paid period starts here; periods before it are billed at zero.
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The trial_end whose trial_will_end notice has been sent.
    trial_notice_for: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Why cancel_at is set: "canceled" (a cancel) or "replaced" (a plan change takes over then).
    end_reason: Mapped[str | None] = mapped_column(sa.String(16))
    # The billing reason of the period that ends at cancel_at when it was cut short by a change
    # "now" (subscription_update or subscription_cancel); None: a cycle invoice.
    close_reason: Mapped[str | None] = mapped_column(sa.String(32))
    cancel_at_period_end: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    replaces: Mapped[str | None] = mapped_column(sa.String(40))
    replaced_by: Mapped[str | None] = mapped_column(sa.String(40))
    # Set and cleared by dunning: an invoice of this subscription has an active dunning case.
    past_due: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("ix_subscriptions_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_subscriptions_tenant_id_customer_id", "tenant_id", "customer_id"),
        sa.Index("ix_subscriptions_next_period_end", "next_period_end"),
        sa.Index("ix_subscriptions_usage_changed_at", "usage_changed_at"),
        sa.Index("ix_subscriptions_trial_end", "trial_end"),
        sa.CheckConstraint(_one_of("end_reason", END_REASONS), name="end_reason"),
    )


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    # None for a standalone invoice (POST /v1/invoices).
    subscription_id: Mapped[str | None] = mapped_column(sa.ForeignKey("subscriptions.id", ondelete="CASCADE"))
    billing_reason: Mapped[str] = mapped_column(
        sa.String(32), default="subscription_cycle", server_default="subscription_cycle"
    )
    number: Mapped[str | None] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16))
    currency: Mapped[str] = mapped_column(sa.String(3))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    subtotal: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # The amounts of "Invoice computation" (invoicing.amounts), stored as computed.
    discount_total: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    tax_total: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    total_excluding_tax: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # [{"tax_rate", "amount", "inclusive"}] per rate applied.
    total_tax_amounts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=EMPTY_LIST
    )
    total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    credits_applied: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # [[grant id, amount]]: a draft's preview; at finalization, what the ledger took.
    credit_applications: Mapped[list[Any]] = mapped_column(JSONType, default=list, server_default=EMPTY_LIST)
    pre_payment_credit_notes_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    post_payment_credit_notes_amount: Mapped[int] = mapped_column(
        sa.BigInteger, default=0, server_default="0"
    )
    # The ids of the invoice's credit notes, oldest first: written (under the invoice's lock) by
    # the credit notes domain, which sits above invoicing; credit notes are final, never removed.
    credit_note_ids: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default=EMPTY_LIST)
    discount_id: Mapped[str | None] = mapped_column(sa.String(40))
    # The customer's tax data as at finalization (None on drafts: read live).
    tax_exempt: Mapped[str | None] = mapped_column(sa.String(16))
    customer_address: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    customer_tax_ids: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=EMPTY_LIST
    )
    legal_notes: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default=EMPTY_LIST)
    amount_paid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    amount_due: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # A draft is finalized automatically once this has passed (period end + grace period).
    grace_ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    marked_uncollectible_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    memo: Mapped[str | None] = mapped_column(sa.Text)
    # ``metadata`` is reserved on declarative classes: the attribute carries a trailing underscore.
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONType, key="metadata_", default=dict, server_default=sa.text("'{}'")
    )
    # False: the draft waits for POST /v1/invoices/{id}/finalize whatever its grace period.
    auto_finalize: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    # When invoice.overdue was emitted: once per invoice.
    overdue_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A threshold invoice: floor(accrued / threshold_amount) when it was made; None otherwise.
    threshold_multiple: Mapped[int | None] = mapped_column(sa.Integer)

    __table_args__ = (
        # One invoice per subscription and period (standalone invoices have no subscription),
        # besides its threshold invoices: one per multiple, even with replicas racing.
        sa.Index(
            "uq_invoices_subscription_period",
            "subscription_id",
            "period_start",
            unique=True,
            postgresql_where=sa.text("threshold_multiple IS NULL"),
            sqlite_where=sa.text("threshold_multiple IS NULL"),
        ),
        sa.UniqueConstraint("subscription_id", "period_start", "threshold_multiple"),
        sa.CheckConstraint(
            "(billing_reason = 'threshold') = (threshold_multiple IS NOT NULL)", name="threshold_multiple"
        ),
        sa.UniqueConstraint("tenant_id", "number"),
        sa.Index("ix_invoices_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_invoices_tenant_id_customer_id", "tenant_id", "customer_id"),
        sa.Index("ix_invoices_drafts_due", "status", "grace_ends_at"),
        sa.Index("ix_invoices_open_due", "status", "due_at"),
        sa.CheckConstraint(_one_of("status", INVOICE_STATUSES), name="status"),
        sa.CheckConstraint(_one_of("billing_reason", BILLING_REASONS), name="billing_reason"),
        # Drafts have no number, and a voided draft never gets one: numbers stay gapless.
        sa.CheckConstraint(
            "(status = 'draft' AND number IS NULL) OR (status = 'void' AND number IS NULL)"
            " OR (status <> 'draft' AND number IS NOT NULL)",
            name="number_when_finalized",
        ),
    )


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    # The line's id on the wire (il_...): new on each recompute of a draft, fixed once finalized.
    public_id: Mapped[str | None] = mapped_column(sa.String(40))
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.String(32))
    meter_id: Mapped[str | None] = mapped_column(sa.String(40))
    invoice_item_id: Mapped[str | None] = mapped_column(sa.String(40))
    description: Mapped[str] = mapped_column(sa.String(500))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    # [{"up_to", "quantity", "unit_amount", "flat_amount", "amount"}], decimals as strings.
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    plan_id: Mapped[str | None] = mapped_column(sa.String(40))
    # [{"discount", "amount"}] and [{"tax_rate", "amount", "taxable_amount", "inclusive"}].
    discount_amounts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=EMPTY_LIST
    )
    tax_amounts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=EMPTY_LIST
    )
    discount_id: Mapped[str | None] = mapped_column(sa.String(40))
    # Dimensional pricing: the plan price's index, the line's group ({key: value | null}), and a
    # meter's unpriced quantity ("group" is a reserved word in SQL: hence group_values).
    price_index: Mapped[int | None] = mapped_column(sa.Integer)
    group_values: Mapped[dict[str, str | None] | None] = mapped_column(JSONType)
    unpriced_quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal())

    __table_args__ = (
        sa.UniqueConstraint("invoice_id", "position"),
        sa.UniqueConstraint("public_id"),
        sa.CheckConstraint(_one_of("kind", LINE_KINDS), name="kind"),
    )


class InvoiceItem(Base):
    """A one-off amount for a customer: pending until an invoice takes it, then invoiced there
    (a voided invoice keeps its items: voiding waives them)."""

    __tablename__ = "invoice_items"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    invoice_id: Mapped[str | None] = mapped_column(sa.ForeignKey("invoices.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(sa.String(16))
    description: Mapped[str] = mapped_column(sa.String(500))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    # The period the line is dated by: the item's creation instant unless given.
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, key="metadata_", default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("ix_invoice_items_tenant_id_id", "tenant_id", "id"),
        # Closing a batch looks up its customers' pending items.
        sa.Index("ix_invoice_items_pending", "tenant_id", "customer_id", "status"),
        sa.Index("ix_invoice_items_invoice_id", "invoice_id"),
        sa.CheckConstraint(_one_of("status", INVOICE_ITEM_STATUSES), name="status"),
        sa.CheckConstraint("amount <> 0", name="amount"),
        sa.CheckConstraint("period_start <= period_end", name="period"),
    )


class InvoiceStatusChange(Base):
    """Who moved an invoice to which status, and when: an API key id, or ``scheduler``."""

    __tablename__ = "invoice_status_changes"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(64))


class InvoiceSequence(Base):
    """The last invoice number given out per tenant: finalizations update this one row, in their
    own transaction, so numbers are gapless and concurrent finalizations queue on its lock."""

    __tablename__ = "invoice_sequences"

    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    last_number: Mapped[int] = mapped_column(sa.BigInteger, default=0)
