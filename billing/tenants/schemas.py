"""Tenant and API key shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

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
