"""Invoice item and standalone invoice shapes on the wire, and the invoice PATCH."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from billing.invoicing.models import InvoiceItem
from billing.invoicing.schemas import AwareDateTime

Description = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class PeriodIn(msgspec.Struct, forbid_unknown_fields=True):
    start: AwareDateTime
    end: AwareDateTime


class InvoiceItemCreate(msgspec.Struct, forbid_unknown_fields=True):
    """``invoice``: a draft of the customer's that the item joins at once; without it, the item
    waits for the customer's next invoice."""

    customer: str
    description: Description
    amount: int
    currency: str | None = None
    period: PeriodIn | None = None
    invoice: str | None = None
    metadata: dict[str, str] | None = None


class ItemIn(msgspec.Struct, forbid_unknown_fields=True):
    description: Description
    amount: int
    period: PeriodIn | None = None
    metadata: dict[str, str] | None = None


class InvoiceCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A standalone invoice: these items only (the customer's pending items stay pending)."""

    customer: str
    items: Annotated[list[ItemIn], msgspec.Meta(min_length=1, max_length=100)]
    memo: str | None = None
    metadata: dict[str, str] | None = None
    auto_finalize: bool = True


class InvoicePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``memo`` only while the invoice is a draft; ``metadata`` (replaced whole) at any time."""

    memo: str | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET


class InvoiceItemOut(msgspec.Struct):
    id: str
    customer: str
    status: str
    invoice: str | None
    description: str
    amount: int
    currency: str
    period_start: datetime
    period_end: datetime
    metadata: dict[str, str]
    created_at: datetime
    deleted_at: datetime | None
    object: str = "invoice_item"


def invoice_item_out(item: InvoiceItem) -> InvoiceItemOut:
    return InvoiceItemOut(
        id=item.id,
        customer=item.customer_id,
        status=item.status,
        invoice=item.invoice_id,
        description=item.description,
        amount=item.amount,
        currency=item.currency,
        period_start=item.period_start,
        period_end=item.period_end,
        metadata=dict(item.metadata_),
        created_at=item.created_at,
        deleted_at=item.deleted_at,
    )
