"""Tenant and API key verbs; a session is the first argument, no HTTP in here."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.crypto import SecretBox
from billing.core.errors import NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.tenants import addresses, tax_ids, tax_rates
from billing.tenants.models import ApiKey, Tenant
from billing.tenants.schemas import TenantPatch
from billing.web.auth import Principal, Scope, generate_key

MAX_WEBHOOK_SECRETS = 5
GRACE_PERIOD_MAX_HOURS = 24 * 31
NET_TERMS_MAX_DAYS = 365


def invoice_prefix_for(name: str) -> str:
    letters = re.sub(r"[^A-Za-z0-9]", "", name).upper()[:8]
    return letters or "INV"


async def create_tenant(session: AsyncSession, *, name: str, currency: str, now: datetime) -> Tenant:
    tenant = Tenant(
        id=new_id("ten"),
        name=validation.text("name", name, max_length=200),
        currency=validation.currency("currency", currency),
        invoice_prefix=invoice_prefix_for(name),
        billing_timezone="UTC",
        grace_period_hours=24,
        payment_provider="sandbox",
        stripe_webhook_secrets_encrypted=[],
        stripe_livemode=False,
        stripe_payment_method_events=False,
        created_at=now,
        updated_at=now,
    )
    session.add(tenant)
    await session.flush()
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id}")
    return tenant


async def create_api_key(
    session: AsyncSession, *, tenant_id: str, scope: Scope, name: str | None, now: datetime
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored."""
    await get_tenant(session, tenant_id)
    new_key = generate_key()
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        scope=scope.value,
        name=validation.text("name", name, max_length=200) if name else None,
        key_hash=new_key.digest,
        key_prefix=new_key.prefix,
        created_at=now,
    )
    session.add(key)
    await session.flush()
    return key, new_key.plaintext


async def get_api_key(session: AsyncSession, key_id: str, *, tenant_id: str | None = None) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
        raise NotFound(f"No API key {key_id}")
    return key


async def revoke_api_key(
    session: AsyncSession, key_id: str, *, now: datetime, tenant_id: str | None = None
) -> ApiKey:
    key = await get_api_key(session, key_id, tenant_id=tenant_id)
    if key.revoked_at is None:
        key.revoked_at = now
        await session.flush()
    return key


async def list_api_keys(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[ApiKey], bool]:
    stmt = sa.select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    return await fetch_page(session, stmt, ApiKey.id, page)


async def update_tenant(
    session: AsyncSession,
    tenant: Tenant,
    patch: TenantPatch,
    *,
    box: SecretBox,
    now: datetime,
    production: bool,
) -> Tenant:
    """Apply a validated patch; provider secrets are encrypted before they touch the row."""
    _apply_profile(tenant, patch, production=production)
    _apply_provider(tenant, patch, box)
    await _apply_tax_settings(session, tenant, patch)
    tenant.updated_at = now
    await session.flush()
    return tenant


def _apply_profile(tenant: Tenant, patch: TenantPatch, *, production: bool) -> None:
    if patch.name is not UNSET:
        tenant.name = validation.text("name", patch.name, max_length=200)
    if patch.support_email is not UNSET:
        tenant.support_email = patch.support_email and validation.email("support_email", patch.support_email)
    if patch.email_from is not UNSET:
        tenant.email_from = patch.email_from and validation.email("email_from", patch.email_from)
    if patch.billing_timezone is not UNSET:
        tenant.billing_timezone = validation.timezone("billing_timezone", patch.billing_timezone)
    if patch.grace_period_hours is not UNSET:
        tenant.grace_period_hours = validation.int_range(
            "grace_period_hours", patch.grace_period_hours, 0, GRACE_PERIOD_MAX_HOURS
        )
    if patch.net_terms_days is not UNSET:
        tenant.net_terms_days = validation.int_range(
            "net_terms_days", patch.net_terms_days, 0, NET_TERMS_MAX_DAYS
        )
    if patch.update_payment_method_url is not UNSET:
        url = patch.update_payment_method_url
        tenant.update_payment_method_url = url and validation.web_url(
            "update_payment_method_url", url, require_https=production
        )


async def _apply_tax_settings(session: AsyncSession, tenant: Tenant, patch: TenantPatch) -> None:
    """The default tax rates, and the seller's address and tax id for documents."""
    if patch.default_tax_rates is not UNSET:
        tenant.default_tax_rates = await tax_rates.attachable(
            session,
            tenant.id,
            "default_tax_rates",
            patch.default_tax_rates,
            attached=tenant.default_tax_rates,
            limit=tax_rates.MAX_DEFAULTS,
        )
    if patch.address is not UNSET:
        tenant.address = addresses.stored_address("address", patch.address)
    if patch.tax_id is not UNSET:
        tenant.tax_id = None if patch.tax_id is None else tax_ids.tax_id("tax_id", patch.tax_id)
    if tenant.tax_id is not None:
        tax_ids.check_country("tax_id", tenant.tax_id, addresses.address_country(tenant.address))


def _apply_provider(tenant: Tenant, patch: TenantPatch, box: SecretBox) -> None:
    if patch.stripe_secret_key is not UNSET:
        key = patch.stripe_secret_key
        if key is not None and not re.fullmatch(r"(sk|rk)_(test|live)_[A-Za-z0-9]{8,247}", key):
            raise ValidationFailed.field(
                "stripe_secret_key", "expected a Stripe secret key (sk_... or rk_...)"
            )
        tenant.stripe_secret_key_encrypted = box.encrypt(key) if key else None
    if patch.stripe_webhook_secrets is not UNSET:
        tenant.stripe_webhook_secrets_encrypted = [
            box.encrypt(secret) for secret in _webhook_secrets(patch.stripe_webhook_secrets or [])
        ]
    if patch.stripe_livemode is not UNSET:
        tenant.stripe_livemode = patch.stripe_livemode
    if patch.stripe_payment_method_events is not UNSET:
        tenant.stripe_payment_method_events = patch.stripe_payment_method_events
    if patch.payment_provider is not UNSET:
        tenant.payment_provider = patch.payment_provider
    if tenant.payment_provider == "stripe" and tenant.stripe_secret_key_encrypted is None:
        raise ValidationFailed.field("payment_provider", "stripe needs stripe_secret_key to be set")


def _webhook_secrets(secrets: list[str]) -> list[str]:
    if len(secrets) > MAX_WEBHOOK_SECRETS:
        raise ValidationFailed.field("stripe_webhook_secrets", f"at most {MAX_WEBHOOK_SECRETS} secrets")
    for index, secret in enumerate(secrets):
        if not re.fullmatch(r"whsec_[A-Za-z0-9+/=_-]{8,250}", secret):
            raise ValidationFailed.field(f"stripe_webhook_secrets[{index}]", "expected a whsec_... secret")
    return secrets


def stripe_webhook_secrets(tenant: Tenant, box: SecretBox) -> list[str]:
    return [box.decrypt(token) for token in tenant.stripe_webhook_secrets_encrypted]


def stripe_secret_key(tenant: Tenant, box: SecretBox) -> str | None:
    token = tenant.stripe_secret_key_encrypted
    return box.decrypt(token) if token else None


async def principal_for_key(session: AsyncSession, digest: str) -> Principal | None:
    """Who calls with the live API key of this SHA-256 digest; None if none (unknown or revoked)."""
    row = (
        await session.execute(
            sa.select(ApiKey.id, ApiKey.tenant_id, ApiKey.scope).where(
                ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)
            )
        )
    ).first()
    return None if row is None else Principal(tenant_id=row.tenant_id, key_id=row.id, scope=Scope(row.scope))
