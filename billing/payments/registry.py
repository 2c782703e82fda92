"""The payment providers by name: adding one is one module and one line here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from billing.core.context import AppContext
from billing.payments.provider import PaymentProvider
from billing.payments.providers.sandbox import SandboxProvider
from billing.payments.providers.stripe import StripeProvider
from billing.tenants.models import Tenant
from billing.tenants.service import stripe_secret_key


class ProviderUnavailable(Exception):
    """The tenant's provider cannot be used as configured (e.g. no Stripe key)."""


def _stripe(ctx: AppContext, tenant: Tenant) -> PaymentProvider:
    key = stripe_secret_key(tenant, ctx.box)
    if key is None:
        raise ProviderUnavailable("stripe_secret_key is not set")
    settings = ctx.settings
    return StripeProvider(
        key,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
        max_network_retries=settings.stripe_max_network_retries,
    )


PROVIDERS: dict[str, Callable[[AppContext, Tenant], PaymentProvider]] = {
    "sandbox": lambda ctx, tenant: SandboxProvider(),
    "stripe": _stripe,
}


@asynccontextmanager
async def open_provider(
    ctx: AppContext, tenant: Tenant, name: str | None = None
) -> AsyncIterator[PaymentProvider]:
    """The provider ``name`` (default: the tenant's) set up for ``tenant``, closed after use."""
    factory = PROVIDERS.get(name or tenant.payment_provider)
    if factory is None:
        raise ProviderUnavailable(f"unknown payment provider '{name or tenant.payment_provider}'")
    provider = factory(ctx, tenant)
    try:
        yield provider
    finally:
        await provider.aclose()
