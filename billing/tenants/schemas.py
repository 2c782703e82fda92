"""Tenant and API key shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.core import money
from billing.tenants.addresses import Address
from billing.tenants.models import ApiKey, TaxRate, Tenant
from billing.tenants.tax_ids import TaxIdIn

PaymentProvider = Literal["stripe", "sandbox"]


class TenantOut(msgspec.Struct):
    id: str
    name: str
    currency: str
    invoice_prefix: str
    support_email: str | None
    billing_timezone: str
    grace_period_hours: int
    payment_provider: str
    stripe_secret_key_set: bool
    stripe_webhook_secrets_count: int
    stripe_livemode: bool
    stripe_payment_method_events: bool
    update_payment_method_url: str | None
    email_from: str | None
    net_terms_days: int
    default_tax_rates: list[str]
    address: dict[str, Any] | None
    tax_id: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    object: str = "tenant"


class TenantPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only the fields present change; ``null`` clears an optional field or secret."""

    name: str | UnsetType = UNSET
    support_email: str | UnsetType | None = UNSET
    billing_timezone: str | UnsetType = UNSET
    grace_period_hours: int | UnsetType = UNSET
    payment_provider: PaymentProvider | UnsetType = UNSET
    stripe_secret_key: str | UnsetType | None = UNSET
    stripe_webhook_secrets: list[str] | UnsetType | None = UNSET
    stripe_livemode: bool | UnsetType = UNSET
    stripe_payment_method_events: bool | UnsetType = UNSET
    update_payment_method_url: str | UnsetType | None = UNSET
    email_from: str | UnsetType | None = UNSET
    net_terms_days: int | UnsetType = UNSET
    default_tax_rates: list[str] | UnsetType = UNSET
    address: Address | UnsetType | None = UNSET
    tax_id: TaxIdIn | UnsetType | None = UNSET


class TaxRateCreate(msgspec.Struct, forbid_unknown_fields=True):
    display_name: str
    percentage: str
    inclusive: bool
    country: str | None = None
    jurisdiction: str | None = None
    description: str | None = None


class TaxRatePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only these change (as Stripe): a rate's percentage, inclusiveness and place are what
    invoices that used it said."""

    display_name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    active: bool | UnsetType = UNSET


class TaxRateOut(msgspec.Struct):
    id: str
    display_name: str
    description: str | None
    percentage: str
    inclusive: bool
    country: str | None
    jurisdiction: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    object: str = "tax_rate"


class ApiKeyOut(msgspec.Struct):
    id: str
    tenant: str
    scope: str
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    object: str = "api_key"


class ApiKeyCreated(ApiKeyOut):
    """The only time the key itself is shown."""

    key: str = ""


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["admin", "ingest", "finance"]
    name: str | None = None


def tenant_out(tenant: Tenant) -> TenantOut:
    return TenantOut(
        id=tenant.id,
        name=tenant.name,
        currency=tenant.currency,
        invoice_prefix=tenant.invoice_prefix,
        support_email=tenant.support_email,
        billing_timezone=tenant.billing_timezone,
        grace_period_hours=tenant.grace_period_hours,
        payment_provider=tenant.payment_provider,
        stripe_secret_key_set=tenant.stripe_secret_key_encrypted is not None,
        stripe_webhook_secrets_count=len(tenant.stripe_webhook_secrets_encrypted),
        stripe_livemode=tenant.stripe_livemode,
        stripe_payment_method_events=tenant.stripe_payment_method_events,
        update_payment_method_url=tenant.update_payment_method_url,
        email_from=tenant.email_from,
        net_terms_days=tenant.net_terms_days,
        default_tax_rates=list(tenant.default_tax_rates),
        address=tenant.address,
        tax_id=tenant.tax_id,
        created_at=tenant.created_at,
        updated_at=tenant.updated_at,
    )


def tax_rate_out(rate: TaxRate) -> TaxRateOut:
    return TaxRateOut(
        id=rate.id,
        display_name=rate.display_name,
        description=rate.description,
        percentage=money.format_decimal(rate.percentage),
        inclusive=rate.inclusive,
        country=rate.country,
        jurisdiction=rate.jurisdiction,
        active=rate.active,
        created_at=rate.created_at,
        updated_at=rate.updated_at,
    )


def api_key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        tenant=key.tenant_id,
        scope=key.scope,
        name=key.name,
        prefix=key.key_prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


def api_key_created(key: ApiKey, plaintext: str) -> ApiKeyCreated:
    """The new key's answer: what ``api_key_out`` shows, and the key itself."""
    return ApiKeyCreated(**_fields(api_key_out(key)), key=plaintext)


def _fields(out: ApiKeyOut) -> dict[str, Any]:
    """``out``'s fields by name: ApiKeyCreated has the same ones, and the key."""
    return {name: getattr(out, name) for name in out.__struct_fields__}
