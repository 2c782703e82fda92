"""Customer shapes on the wire, and the converter from rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.customers.models import Customer
from billing.tenants.addresses import Address
from billing.tenants.tax_ids import TaxIdIn

TaxExempt = Literal["none", "exempt", "reverse"]


class Card(msgspec.Struct, forbid_unknown_fields=True):
    """The customer's default card as the provider describes it, for expiry notices."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    brand: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    last4: Annotated[str, msgspec.Meta(pattern="^[0-9]{4}$")]
    exp_month: Annotated[int, msgspec.Meta(ge=1, le=12)]
    exp_year: Annotated[int, msgspec.Meta(ge=2000, le=2200)]


class CustomerCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new customer; ``currency`` defaults to the tenant's, ``timezone`` to its billing_timezone."""

    external_id: str
    email: str | None = None
    name: str | None = None
    currency: str | None = None
    timezone: str | None = None
    locale: str | None = None
    provider_customer_id: str | None = None
    default_payment_method: str | None = None
    card: Card | None = None
    metadata: dict[str, str] | None = None
    net_terms_days: int | None = None
    address: Address | None = None
    tax_exempt: TaxExempt = "none"
    tax_ids: list[TaxIdIn] | None = None
    # None: the tenant's default_tax_rates; []: no tax.
    tax_rates: list[str] | None = None
    credit_balance_low_threshold: int | None = None


class CustomerPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only the fields present change; ``null`` clears an optional field; metadata is replaced whole.

    ``external_id`` is fixed at creation (sending it is a 422); ``currency`` changes only until the
    customer has billing history (409 ``currency_locked``).
    """

    currency: str | UnsetType = UNSET
    email: str | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET
    timezone: str | UnsetType | None = UNSET
    locale: str | UnsetType = UNSET
    provider_customer_id: str | UnsetType | None = UNSET
    default_payment_method: str | UnsetType | None = UNSET
    card: Card | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    net_terms_days: int | UnsetType | None = UNSET
    address: Address | UnsetType | None = UNSET
    tax_exempt: TaxExempt | UnsetType = UNSET
    tax_ids: list[TaxIdIn] | UnsetType | None = UNSET
    tax_rates: list[str] | UnsetType | None = UNSET
    credit_balance_low_threshold: int | UnsetType | None = UNSET


class CustomerOut(msgspec.Struct):
    id: str
    external_id: str
    email: str | None
    name: str | None
    currency: str
    timezone: str | None
    locale: str
    provider_customer_id: str | None
    default_payment_method: str | None
    card: Card | None
    metadata: dict[str, str]
    payment_status: str
    archived_at: datetime | None
    # None: the tenant's net terms apply.
    net_terms_days: int | None
    address: dict[str, Any] | None
    tax_exempt: str
    tax_ids: list[dict[str, Any]]
    # None: the tenant's default_tax_rates apply.
    tax_rates: list[str] | None
    credit_balance_low_threshold: int | None
    # The open dunning case, summarised; filled in once dunning exists.
    dunning: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    object: str = "customer"


def customer_out(customer: Customer, dunning: dict[str, Any] | None = None) -> CustomerOut:
    return CustomerOut(
        id=customer.id,
        external_id=customer.external_id,
        email=customer.email,
        name=customer.name,
        currency=customer.currency,
        timezone=customer.timezone,
        locale=customer.locale,
        provider_customer_id=customer.provider_customer_id,
        default_payment_method=customer.default_payment_method,
        card=card_of(customer),
        metadata=dict(customer.metadata_),
        payment_status=customer.payment_status,
        archived_at=customer.archived_at,
        net_terms_days=customer.net_terms_days,
        address=customer.address,
        tax_exempt=customer.tax_exempt,
        tax_ids=list(customer.tax_ids),
        tax_rates=None if customer.tax_rates is None else list(customer.tax_rates),
        credit_balance_low_threshold=customer.credit_balance_low_threshold,
        dunning=dunning,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def card_of(customer: Customer) -> Card | None:
    if customer.card_id is None:
        return None
    return Card(
        id=customer.card_id,
        brand=customer.card_brand or "",
        last4=customer.card_last4 or "",
        exp_month=customer.card_exp_month or 1,
        exp_year=customer.card_exp_year or 2000,
    )
