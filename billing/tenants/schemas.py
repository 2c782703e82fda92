"""Tenant and API key shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.tenants.models import ApiKey, Tenant

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
        created_at=tenant.created_at,
        updated_at=tenant.updated_at,
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
