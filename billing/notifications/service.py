"""Notifications as the tenant reads them: the list of emails, and previews of each kind."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.errors import NotFound
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.service import get_customer
from billing.notifications.models import Notification
from billing.notifications.queue import ALL_KINDS
from billing.notifications.render import Rendered, render
from billing.notifications.samples import sample_context
from billing.tenants.models import Tenant


async def list_notifications(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    customer: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    invoice_id: str | None = None,
) -> tuple[list[Notification], bool]:
    """The tenant's notifications, newest first; ``customer`` is an id or an external_id."""
    query = sa.select(Notification).where(Notification.tenant_id == tenant_id)
    if customer is not None:
        customer_id = (await get_customer(session, tenant_id, customer)).id
        query = query.where(Notification.customer_id == customer_id)
    for column, value in ((Notification.kind, kind), (Notification.status, status)):
        if value is not None:
            query = query.where(column == value)
    if invoice_id is not None:
        query = query.where(Notification.invoice_id == invoice_id)
    return await fetch_page(session, query, Notification.id, page)


async def preview(ctx: AppContext, tenant_id: str, kind: str, *, locale: str | None) -> Rendered:
    """An email of ``kind`` rendered with sample data and the tenant's branding."""
    if kind not in ALL_KINDS:
        raise NotFound(f"No email kind '{kind}'; kinds: {', '.join(ALL_KINDS)}")
    async with ctx.database.read() as session:
        tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant")
    return render(kind, sample_context(kind, tenant, ctx.clock.now(), locale))
