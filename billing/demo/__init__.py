"""The demo tenant of ``billing demo`` and ``make run``: plans in the five price models, a few
dozen customers with three months of usage, invoices in every status, dunning cases and emails,
credits, a coupon, VAT under reverse charge, a credit note, and AI usage priced per model and
direction with threshold invoices and a spend alert.

It is built once, through the service's own verbs (see ``story.py``), and then reused: its id
and plain-text keys are kept in the data dir (mode 0600), like the development tenant's, so that
every run can print them again. Development only; production never keeps keys in plain text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.demo.catalog import TENANT_NAME, TENANT_SETTINGS, create_catalog
from billing.demo.roster import MAX_CUSTOMERS, MIN_CUSTOMERS, cast
from billing.demo.story import BillingRun, Story
from billing.tenants import service
from billing.tenants.models import ApiKey
from billing.web.auth import Scope, hash_key

DEMO_TENANT_FILE = "demo-tenant.json"
DEFAULT_CUSTOMERS = 36
HISTORY = timedelta(days=91)

__all__ = ["DEFAULT_CUSTOMERS", "DEMO_TENANT_FILE", "MAX_CUSTOMERS", "MIN_CUSTOMERS", "banner", "ensure"]


async def ensure(
    ctx: AppContext,
    *,
    billing_run: BillingRun,
    customers: int = DEFAULT_CUSTOMERS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The demo tenant of this data dir: the saved one while its keys work, else a new one.

    ``billing_run`` is what ``POST /v1/billing/run`` does, for one tenant (``billing.jobs``)."""
    path = ctx.settings.data_dir / DEMO_TENANT_FILE
    saved = _load(path)
    if saved is not None and await _keys_work(ctx, saved):
        return saved | {"created": False}
    if progress is not None:
        progress(f"Building the demo tenant: {customers} customers, {HISTORY.days} days of history...")
    info = await build(ctx, billing_run=billing_run, customers=customers)
    _save(path, info)
    return info | {"created": True}


async def build(
    ctx: AppContext, *, billing_run: BillingRun, customers: int = DEFAULT_CUSTOMERS
) -> dict[str, Any]:
    """A new demo tenant whose history ends at ``ctx.clock.now()``; its id and keys."""
    now = ctx.clock.now()
    personas = cast(customers, now=now)
    start = (now - HISTORY).replace(hour=0, minute=0, second=0, microsecond=0)
    opened = start - timedelta(days=1)
    async with ctx.database.transaction() as session:
        tenant = await service.create_tenant(session, name=TENANT_NAME, currency="USD", now=opened)
        tax_rates = await create_catalog(session, tenant.id, now=opened)
        settings = msgspec.structs.replace(TENANT_SETTINGS, default_tax_rates=tax_rates)
        await service.update_tenant(
            session, tenant, settings, box=ctx.box, now=opened, production=ctx.settings.production
        )
        keys = {
            scope: await service.create_api_key(
                session, tenant_id=tenant.id, scope=scope, name=f"demo {scope.value}", now=opened
            )
            for scope in (Scope.ADMIN, Scope.FINANCE)
        }
    finance_key_id = keys[Scope.FINANCE][0].id
    story = Story(ctx, tenant.id, finance_key_id, start=start, now=now, billing_run=billing_run)
    await story.play(personas)
    return {
        "tenant_id": tenant.id,
        "admin_key_id": keys[Scope.ADMIN][0].id,
        "admin_key": keys[Scope.ADMIN][1],
        "finance_key_id": finance_key_id,
        "finance_key": keys[Scope.FINANCE][1],
        "customers": customers,
    }


def banner(info: dict[str, Any], url_base: str) -> str:
    state = "created" if info.get("created") else "already there, reused"
    return "\n".join(
        [
            f"Demo tenant ready ({state}): {info['customers']} customers, invoices, dunning, emails",
            f"       tenant: {info['tenant_id']}",
            f"    admin key: {info['admin_key']}",
            f"  finance key: {info['finance_key']}",
            f"      finance: {url_base}/finance",
            f"     API docs: {url_base}/schema/docs",
        ]
    )


def _load(path: os.PathLike[str]) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return None
    fields = ("tenant_id", "admin_key", "finance_key")
    if not isinstance(info, dict) or not all(isinstance(info.get(field), str) for field in fields):
        return None
    return info


async def _keys_work(ctx: AppContext, info: dict[str, Any]) -> bool:
    hashes = [hash_key(info["admin_key"]), hash_key(info["finance_key"])]
    async with ctx.database.read() as session:
        found = await session.scalar(
            sa.select(sa.func.count())
            .select_from(ApiKey)
            .where(
                ApiKey.key_hash.in_(hashes),
                ApiKey.tenant_id == info["tenant_id"],
                ApiKey.revoked_at.is_(None),
            )
        )
    return found == len(hashes)


def _save(path: os.PathLike[str], info: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle)
