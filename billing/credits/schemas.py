"""Credit grant, balance and ledger shapes on the wire, and the converters from rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from billing.credits.models import CreditGrant, CreditLedgerEntry

AwareDateTime = Annotated[datetime, msgspec.Meta(tz=True)]
Category = Literal["paid", "promotional"]


class CreditGrantCreate(msgspec.Struct, forbid_unknown_fields=True):
    """``currency`` defaults to the customer's; ``applies_to_meters`` names meters by key."""

    name: str
    amount: int
    category: Category
    currency: str | None = None
    priority: int = 50
    expires_at: AwareDateTime | None = None
    applies_to_meters: list[str] | None = None
    metadata: dict[str, str] | None = None


class CreditGrantOut(msgspec.Struct):
    id: str
    customer: str
    name: str
    amount: int
    currency: str
    category: str
    priority: int
    expires_at: datetime | None
    applies_to_meters: list[str] | None
    available: int
    invoice: str | None
    status: str
    effective_at: datetime | None
    voided_at: datetime | None
    created_at: datetime
    metadata: dict[str, str]
    object: str = "credit_grant"


def credit_grant_out(grant: CreditGrant, meter_keys: Mapping[str, str]) -> CreditGrantOut:
    meters = grant.applies_to_meters
    return CreditGrantOut(
        id=grant.id,
        customer=grant.customer_id,
        name=grant.name,
        amount=grant.amount,
        currency=grant.currency,
        category=grant.category,
        priority=grant.priority,
        expires_at=grant.expires_at,
        applies_to_meters=None if meters is None else [meter_keys.get(m, m) for m in meters],
        available=grant.available,
        invoice=grant.invoice_id,
        status=grant.status,
        effective_at=grant.effective_at,
        voided_at=grant.voided_at,
        created_at=grant.created_at,
        metadata=dict(grant.metadata_),
    )


class BalanceGrantOut(msgspec.Struct):
    credit_grant: str
    name: str
    category: str
    priority: int
    expires_at: datetime | None
    status: str
    available: int


class CurrencyBalanceOut(msgspec.Struct):
    currency: str
    available: int
    pending: int
    grants: list[BalanceGrantOut]


class CreditBalanceOut(msgspec.Struct):
    customer: str
    balances: list[CurrencyBalanceOut]
    object: str = "credit_balance"


def balance_grant_out(grant: CreditGrant) -> BalanceGrantOut:
    return BalanceGrantOut(
        credit_grant=grant.id,
        name=grant.name,
        category=grant.category,
        priority=grant.priority,
        expires_at=grant.expires_at,
        status=grant.status,
        available=grant.available,
    )


class LedgerEntryOut(msgspec.Struct):
    id: str
    type: str
    credit_grant: str
    currency: str
    amount: int
    balance_after: int
    invoice: str | None
    credit_note: str | None
    created_at: datetime
    object: str = "credit_ledger_entry"


def ledger_entry_out(entry: CreditLedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(
        id=entry.id,
        type=entry.type,
        credit_grant=entry.credit_grant_id,
        currency=entry.currency,
        amount=entry.amount,
        balance_after=entry.balance_after,
        invoice=entry.invoice_id,
        credit_note=entry.credit_note_id,
        created_at=entry.created_at,
    )
