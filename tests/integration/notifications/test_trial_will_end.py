"""``trial_will_end``: the invoicing domain's ``subscription.trial_will_end`` event, through the
outbox, queues one email per subscription and trial end, in the customer's language and timezone."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing import jobs
from billing.core import outbox
from billing.core.context import AppContext
from billing.invoicing import subscriptions
from billing.invoicing.models import Subscription
from billing.notifications.models import Notification
from billing.notifications.subscription_events import CONSUMER, TRIAL_WILL_END
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.notifications.test_notifications import SUPPORT, UPDATE_URL, brand

# The frozen clock says 2026-11-21T12:00Z: a 3-day trial ends 2026-11-24T12:00Z, which is
# November 25 (01:00) in Auckland.
AUCKLAND = "Pacific/Auckland"


@pytest.fixture
async def branded(ctx: AppContext, tenant: TenantHandle) -> TenantHandle:
    await brand(ctx, tenant.id)
    return tenant


async def ok(client: httpx.AsyncClient, tenant: TenantHandle, method: str, path: str, body: Any) -> Any:
    response = await client.request(method, path, headers=tenant.headers(), json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def on_trial(client: httpx.AsyncClient, tenant: TenantHandle, locale: str, timezone: str) -> str:
    """The id of a 3-day trial of "Pro Monthly" for Jane, of ``locale`` and ``timezone``."""
    customer = {"external_id": "jane", "email": "jane@example.com", "name": "Jane Doe"}
    customer_id = (
        await ok(client, tenant, "POST", "/v1/customers", customer | {"locale": locale, "timezone": timezone})
    )["id"]
    await ok(client, tenant, "POST", "/v1/plans", {"code": "pro", "name": "Pro Monthly", "base_fee": 3000})
    body = {"customer": customer_id, "plan": "pro", "trial_days": 3}
    subscription = await ok(client, tenant, "POST", "/v1/subscriptions", body)
    assert subscription["status"] == "trialing" and subscription["trial_end"] == "2026-11-24T12:00:00Z"
    return str(subscription["id"])


async def notice_falls_due(ctx: AppContext, subscription_id: str) -> str:
    """What the invoicing domain does when the notice falls due: one event carrying the
    subscription as the API shows it. Returns the event id."""
    async with ctx.database.transaction() as session:
        sub = await session.get(Subscription, subscription_id)
        assert sub is not None
        await subscriptions.emit(session, sub, TRIAL_WILL_END, ctx.clock.now())
        query = sa.select(outbox.OutboxEvent.event_id).where(outbox.OutboxEvent.topic == TRIAL_WILL_END)
        return str((await session.scalars(query.order_by(outbox.OutboxEvent.id.desc()))).first())


async def emails(client: httpx.AsyncClient, tenant: TenantHandle) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/notifications", headers=tenant.headers(Scope.FINANCE), params={"kind": "trial_will_end"}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def bodies(ctx: AppContext, notification_id: str) -> tuple[str, str]:
    query = sa.select(Notification.text, Notification.html).where(Notification.id == notification_id)
    async with ctx.database.read() as session:
        text, html = (await session.execute(query)).one()
    return text, html


async def test_the_notice_emails_the_customer_once_in_english_in_their_timezone(
    client: httpx.AsyncClient, ctx: AppContext, branded: TenantHandle
) -> None:
    subscription_id = await on_trial(client, branded, "en", AUCKLAND)
    await notice_falls_due(ctx, subscription_id)
    await jobs.dispatch_outbox(ctx)

    (email,) = await emails(client, branded)
    assert (email["to"], email["status"]) == ("jane@example.com", "queued")
    assert email["dedupe_key"] == f"trial_will_end:{subscription_id}:2026-11-24T12:00:00Z"
    assert email["subject"] == "Acme: your Pro Monthly trial ends on November 25, 2026"
    text, html = await bodies(ctx, email["id"])
    assert text.startswith("Hello Jane Doe,\n\nYour trial of Pro Monthly ends on November 25, 2026.\n")
    assert "your first paid period starts that day, and the card on file will be charged for it" in text
    assert f"Update payment method: {UPDATE_URL}" in text and f"Questions? Write to {SUPPORT}." in text
    assert '<html lang="en">' in html and "<strong>November 25, 2026</strong>" in html
    assert html.count('href="https://acme.example/billing/card?from=email&amp;x=1"') == 2


async def test_a_german_customer_reads_it_wholly_in_german(
    client: httpx.AsyncClient, ctx: AppContext, branded: TenantHandle
) -> None:
    subscription_id = await on_trial(client, branded, "de_DE", AUCKLAND)
    await notice_falls_due(ctx, subscription_id)
    await jobs.dispatch_outbox(ctx)

    (email,) = await emails(client, branded)
    assert email["subject"] == "Acme: Ihre Testphase für Pro Monthly endet am 25. November 2026"
    text, html = await bodies(ctx, email["id"])
    assert text.startswith("Hallo Jane Doe,\n\nIhre Testphase für Pro Monthly endet am 25. November 2026.\n")
    assert "die hinterlegte Karte wird dafür belastet" in text
    assert f"Zahlungsmethode aktualisieren: {UPDATE_URL}" in text
    assert f"Fragen? Schreiben Sie an {SUPPORT}." in text
    assert '<html lang="de">' in html and "Oder öffnen Sie diesen Link:" in html
    for english in ("Hello", "trial", "Update payment method", "Questions", "Or open this link"):
        assert english not in text + html, english


async def test_a_redelivered_notice_queues_nothing_and_a_moved_trial_end_queues_again(
    client: httpx.AsyncClient, ctx: AppContext, branded: TenantHandle
) -> None:
    subscription_id = await on_trial(client, branded, "en", "UTC")
    event_id = await notice_falls_due(ctx, subscription_id)
    await jobs.dispatch_outbox(ctx)
    assert len(await emails(client, branded)) == 1

    # The same message handled again (delivery is at least once), and the same notice emitted twice.
    async with ctx.database.read() as session:
        row = (
            await session.execute(
                sa.select(outbox.OutboxEvent).where(
                    outbox.OutboxEvent.event_id == event_id, outbox.OutboxEvent.consumer == CONSUMER
                )
            )
        ).scalar_one()
    (consumer,) = [c for c in jobs.CONSUMERS if c.name == CONSUMER]
    await consumer.handle(
        ctx, outbox.Message(event_id, row.tenant_id, row.topic, row.payload, row.created_at, row.attempts + 1)
    )
    await notice_falls_due(ctx, subscription_id)
    await jobs.dispatch_outbox(ctx)
    assert len(await emails(client, branded)) == 1

    moved = {"trial_end": "2026-11-28T12:00:00Z"}
    await ok(client, branded, "PATCH", f"/v1/subscriptions/{subscription_id}", moved)
    await notice_falls_due(ctx, subscription_id)
    await jobs.dispatch_outbox(ctx)
    latest, first = await emails(client, branded)
    assert latest["dedupe_key"] == f"trial_will_end:{subscription_id}:2026-11-28T12:00:00Z"
    assert latest["subject"] == "Acme: your Pro Monthly trial ends on November 28, 2026"
    assert first["subject"] == "Acme: your Pro Monthly trial ends on November 24, 2026"


async def test_another_language_gets_the_whole_email_in_english(
    client: httpx.AsyncClient, ctx: AppContext, branded: TenantHandle
) -> None:
    subscription_id = await on_trial(client, branded, "pt_BR", "UTC")
    await notice_falls_due(ctx, subscription_id)
    await jobs.dispatch_outbox(ctx)

    (email,) = await emails(client, branded)
    assert email["subject"] == "Acme: your Pro Monthly trial ends on November 24, 2026"


async def test_the_billing_run_sends_the_notice_72_hours_ahead_once_per_trial_end(
    client: httpx.AsyncClient, ctx: AppContext, branded: TenantHandle
) -> None:
    """The whole path: the trial_notices job emits the event, the outbox queues the email."""
    customer = {"external_id": "jane", "email": "jane@example.com", "name": "Jane Doe"}
    await ok(client, branded, "POST", "/v1/customers", customer)
    await ok(client, branded, "POST", "/v1/plans", {"code": "pro", "name": "Pro Monthly", "trial_days": 14})
    subscription = await ok(client, branded, "POST", "/v1/subscriptions", {"customer": "jane", "plan": "pro"})
    assert subscription["trial_end"] == "2026-12-05T12:00:00Z"

    async def run(at: str) -> None:
        await ok(client, branded, "POST", "/v1/billing/run", {"at": at})

    await run("2026-12-02T11:59:59Z")
    assert await emails(client, branded) == []
    await run("2026-12-02T12:00:00Z")
    await run("2026-12-03T00:00:00Z")
    (first,) = await emails(client, branded)
    assert first["dedupe_key"] == f"trial_will_end:{subscription['id']}:2026-12-05T12:00:00Z"
    # Moving the end re-arms the notice, once more.
    moved = await ok(
        client,
        branded,
        "PATCH",
        f"/v1/subscriptions/{subscription['id']}",
        {"trial_end": "2026-12-20T00:00:00Z"},
    )
    assert moved["trial_end"] == "2026-12-20T00:00:00Z"
    await run("2026-12-17T00:00:00Z")
    await run("2026-12-18T00:00:00Z")
    assert [email["dedupe_key"] for email in await emails(client, branded)] == [
        f"trial_will_end:{subscription['id']}:2026-12-20T00:00:00Z",
        first["dedupe_key"],
    ]
