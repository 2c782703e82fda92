"""Customer emails: queued once per dedupe key, rendered safely, delivered once by SMTP or as .eml.

SMTP tests talk to a real server (aiosmtpd, ``tests/fakes/smtp_sink.py``) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing import jobs
from billing.core import outbox
from billing.core.context import AppContext
from billing.core.ids import new_id
from billing.customers import service as customers
from billing.customers.models import Customer
from billing.customers.schemas import CustomerCreate
from billing.invoicing import plans, subscriptions
from billing.invoicing.models import Invoice
from billing.invoicing.schemas import PlanCreate, SubscriptionCreate
from billing.notifications import delivery
from billing.notifications import dispatch as dispatch_module
from billing.notifications.delivery import DeliveryError, Email, SmtpTransport
from billing.notifications.dispatch import MAX_ATTEMPTS, dispatch_notifications, retry_delay
from billing.notifications.models import Notification
from billing.notifications.queue import ALL_KINDS, KINDS, queue_notification
from billing.tenants.models import Tenant
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.fakes.smtp_sink import SmtpSink, body, running_sink, use_smtp

UPDATE_URL = "https://acme.example/billing/card?from=email&x=1"
SUPPORT = "billing@acme.example"
PERIOD_START = datetime(2026, 10, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 11, 1, tzinfo=UTC)
MakeTenant = Callable[..., Awaitable[TenantHandle]]


async def brand(ctx: AppContext, tenant_id: str, **values: Any) -> None:
    values = {"support_email": SUPPORT, "update_payment_method_url": UPDATE_URL, **values}
    async with ctx.database.transaction() as session:
        await session.execute(sa.update(Tenant).where(Tenant.id == tenant_id).values(**values))


async def make_customer(
    ctx: AppContext,
    tenant_id: str,
    external_id: str = "jane",
    *,
    email: str | None = "jane@example.com",
    name: str | None = "Jane Doe",
    currency: str = "USD",
    locale: str | None = None,
) -> Customer:
    data = CustomerCreate(
        external_id, email=email, name=name, currency=currency, locale=locale, timezone="UTC"
    )
    async with ctx.database.transaction() as session:
        return await customers.create_customer(session, tenant_id, data, now=ctx.clock.now())


async def make_invoice(
    ctx: AppContext, tenant_id: str, customer: Customer, amount_due: int, number: str = "ACME-000001"
) -> str:
    """An open invoice for October, with the customer's currency."""
    now = ctx.clock.now()
    code = f"plan-{customer.external_id}"
    async with ctx.database.transaction() as session:
        await plans.create_plan(session, tenant_id, PlanCreate(code, currency=customer.currency), now=now)
        subscription = await subscriptions.create_subscription(
            session, tenant_id, SubscriptionCreate(customer.id, code, PERIOD_START), now=now
        )
        invoice = Invoice(
            id=new_id("inv"),
            tenant_id=tenant_id,
            customer_id=customer.id,
            subscription_id=subscription.id,
            number=number,
            status="open",
            currency=customer.currency,
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            subtotal=amount_due,
            total=amount_due,
            amount_paid=0,
            amount_due=amount_due,
            grace_ends_at=PERIOD_END,
            computed_at=now,
            created_at=now,
            updated_at=now,
            finalized_at=now,
            due_at=now,
        )
        session.add(invoice)
    return invoice.id


async def queue(
    ctx: AppContext,
    tenant_id: str,
    customer_id: str,
    kind: str = "payment_failed",
    key: str = "payment_failed:inv:1",
    **data: Any,
) -> bool:
    async with ctx.database.transaction() as session:
        return await queue_notification(
            session,
            tenant_id=tenant_id,
            customer_id=customer_id,
            kind=kind,
            dedupe_key=key,
            data=data,
            at=ctx.clock.now(),
        )


async def rows(ctx: AppContext, **where: Any) -> list[Notification]:
    query = sa.select(Notification).order_by(Notification.created_at, Notification.id)
    for column, value in where.items():
        query = query.where(getattr(Notification, column) == value)
    async with ctx.database.read() as session:
        return list((await session.scalars(query)).all())


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A real SMTP server on 127.0.0.1; ``use_smtp(ctx, sink)`` points the app at it."""
    with running_sink() as server:
        yield server


@dataclasses.dataclass
class Scene:
    tenant: TenantHandle
    customer: Customer
    invoice_id: str


@pytest.fixture
async def scene(ctx: AppContext, tenant: TenantHandle) -> Scene:
    """A branded tenant, Jane (USD, English) and her open invoice of $123.45."""
    await brand(ctx, tenant.id)
    customer = await make_customer(ctx, tenant.id)
    return Scene(tenant, customer, await make_invoice(ctx, tenant.id, customer, 12345))


async def queue_failure(ctx: AppContext, scene: Scene, attempt: int = 1, **data: Any) -> bool:
    data = {"invoice_id": scene.invoice_id, "attempt": attempt, **data}
    key = f"payment_failed:{scene.invoice_id}:{attempt}"
    return await queue(ctx, scene.tenant.id, scene.customer.id, key=key, **data)


# --- Default delivery: .eml files --------------------------------------------------------


async def test_without_smtp_each_email_is_an_eml_file_named_by_its_id(ctx: AppContext, scene: Scene) -> None:
    next_try = ctx.clock.now() + timedelta(days=3)
    assert await queue_failure(ctx, scene, next_attempt_at=next_try, decline_code="insufficient_funds")

    assert await dispatch_notifications(ctx) == 1
    (row,) = await rows(ctx)
    files = list((ctx.settings.data_dir / "outbox").iterdir())
    assert [f.name for f in files] == [f"{row.id}.eml"]
    message = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "jane@example.com"
    assert message["Message-ID"] == f"<{row.id}@acme.example>"
    assert message["Subject"] == "Acme: your payment of $123.45 failed (invoice ACME-000001)"
    text = body(message)
    assert "$123.45" in text and "ACME-000001" in text and "the card has insufficient funds" in text
    assert "We will try again on November 24, 2026." in text
    assert f"Update payment method: {UPDATE_URL}" in text
    assert (row.status, row.attempts, row.sent_at) == ("sent", 1, ctx.clock.now())

    assert await dispatch_notifications(ctx) == 0
    assert len(list((ctx.settings.data_dir / "outbox").iterdir())) == 1


# --- Dedupe ------------------------------------------------------------------------------


async def test_the_same_dedupe_key_twice_is_one_row_and_one_email(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    assert await queue_failure(ctx, scene) is True
    assert await queue_failure(ctx, scene) is False
    assert await dispatch_notifications(ctx) == 1
    assert await queue_failure(ctx, scene) is False  # after sending too
    assert await dispatch_notifications(ctx) == 0

    assert len(await rows(ctx)) == 1
    assert [m["To"] for m in sink.messages] == ["jane@example.com"]


async def test_dedupe_keys_are_per_tenant(ctx: AppContext, scene: Scene, make_tenant: MakeTenant) -> None:
    other = await make_tenant(name="Other")
    other_customer = await make_customer(ctx, other.id)
    other_invoice = await make_invoice(ctx, other.id, other_customer, 500)
    key = "payment_failed:same:1"
    assert await queue(ctx, scene.tenant.id, scene.customer.id, key=key, invoice_id=scene.invoice_id)
    assert await queue(ctx, other.id, other_customer.id, key=key, invoice_id=other_invoice)
    assert {r.tenant_id for r in await rows(ctx)} == {scene.tenant.id, other.id}


async def test_concurrent_queues_of_one_key_write_one_row(ctx: AppContext, scene: Scene) -> None:
    results = await asyncio.gather(*[queue_failure(ctx, scene) for _ in range(8)])
    assert sorted(results) == [False] * 7 + [True]
    assert len(await rows(ctx)) == 1


async def test_a_queue_rolled_back_with_its_transaction_leaves_nothing(ctx: AppContext, scene: Scene) -> None:
    with pytest.raises(RuntimeError):
        async with ctx.database.transaction() as session:
            await queue_notification(
                session,
                tenant_id=scene.tenant.id,
                customer_id=scene.customer.id,
                kind="payment_failed",
                dedupe_key="payment_failed:x:1",
                data={"invoice_id": scene.invoice_id},
                at=ctx.clock.now(),
            )
            raise RuntimeError("the state change failed")
    assert await rows(ctx) == []
    assert await queue_failure(ctx, scene)


async def test_a_customer_without_email_gets_a_skipped_row_and_no_email(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    silent = await make_customer(ctx, scene.tenant.id, "silent", email=None)
    invoice_id = await make_invoice(ctx, scene.tenant.id, silent, 100, number="ACME-000002")
    assert await queue(ctx, scene.tenant.id, silent.id, key="k", invoice_id=invoice_id)
    assert not await queue(ctx, scene.tenant.id, silent.id, key="k", invoice_id=invoice_id)

    assert await dispatch_notifications(ctx) == 0
    (row,) = await rows(ctx)
    assert (row.status, row.to_address, row.last_error) == ("skipped", None, "no email address to send to")
    assert sink.log == []


async def test_unknown_kinds_and_foreign_customers_are_refused(
    ctx: AppContext, scene: Scene, make_tenant: MakeTenant
) -> None:
    with pytest.raises(ValueError, match="unknown notification kind"):
        await queue(ctx, scene.tenant.id, scene.customer.id, kind="spam", invoice_id=scene.invoice_id)
    other = await make_tenant(name="Other")
    with pytest.raises(ValueError, match="no customer"):
        await queue(ctx, other.id, scene.customer.id, invoice_id=scene.invoice_id)
    other_customer = await make_customer(ctx, other.id)
    with pytest.raises(ValueError, match="no invoice"):
        await queue(ctx, other.id, other_customer.id, invoice_id=scene.invoice_id)


# --- Rendering ---------------------------------------------------------------------------


async def test_customer_names_are_escaped_in_html_and_kept_in_text(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    name = '<script>alert("x")</script> & <b>Bob</b>'
    await brand(ctx, scene.tenant.id, name="Acme <i>Tools</i> & Sons")
    evil = await make_customer(ctx, scene.tenant.id, "evil", email="bob@example.com", name=name)
    invoice_id = await make_invoice(ctx, scene.tenant.id, evil, 100, number="ACME-000002")
    await queue(ctx, scene.tenant.id, evil.id, invoice_id=invoice_id)
    await dispatch_notifications(ctx)

    (message,) = sink.messages
    html = body(message, "html")
    assert "<script>" not in html and "<b>Bob" not in html and "<i>Tools" not in html
    assert "Hello &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;Bob&lt;/b&gt;," in html
    assert "Acme &lt;i&gt;Tools&lt;/i&gt; &amp; Sons" in html
    assert f"Hello {name}," in body(message)
    assert message["Subject"].startswith("Acme <i>Tools</i> & Sons: your payment of")


async def test_no_header_can_be_injected_through_tenant_or_customer_text(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    await brand(ctx, scene.tenant.id, name="Acme\r\nBcc: victim@example.com")
    await queue_failure(ctx, scene)
    await dispatch_notifications(ctx)

    (message,) = sink.messages
    assert message["Bcc"] is None
    assert [a for (cmd, a, _) in sink.log if cmd == "RCPT"] == ["jane@example.com"]
    assert message["Subject"].startswith("Acme Bcc: victim@example.com: your payment")


@pytest.mark.parametrize(
    ("currency", "locale", "amount", "expected", "date"),
    [
        ("USD", None, 12345, "$123.45", "November 24, 2026"),
        ("JPY", "en", 12345, "¥12,345", "November 24, 2026"),
        ("KWD", "en", 12345, "KWD12.345", "November 24, 2026"),
        ("EUR", "de", 12345, "123,45\xa0€", "24. November 2026"),
        ("USD", "fr-CA", 1234567, "12\xa0345,67\xa0$\xa0US", "24 novembre 2026"),
    ],
)
async def test_amounts_and_dates_follow_the_currency_and_the_customers_locale(
    ctx: AppContext,
    tenant: TenantHandle,
    currency: str,
    locale: str | None,
    amount: int,
    expected: str,
    date: str,
) -> None:
    await brand(ctx, tenant.id)
    customer = await make_customer(ctx, tenant.id, currency=currency, locale=locale)
    invoice_id = await make_invoice(ctx, tenant.id, customer, amount)
    next_try = ctx.clock.now() + timedelta(days=3)
    await queue(ctx, tenant.id, customer.id, invoice_id=invoice_id, next_attempt_at=next_try)

    (row,) = await rows(ctx)
    assert f"your payment of {expected} failed" in row.subject
    assert f"<strong>{expected}</strong>" in row.html
    assert f"We will try again on {date}." in row.text


async def test_every_kind_renders_its_facts_and_one_call_to_action(ctx: AppContext, scene: Scene) -> None:
    card = {"id": "card_1", "brand": "mastercard", "last4": "4444", "exp_month": 12, "exp_year": 2026}
    final = {"final_action": "mark_uncollectible", "final_attempt_at": datetime(2026, 11, 28, tzinfo=UTC)}
    note = {
        "id": "cn_1",
        "number": "CN-ACME-000001",
        "currency": "USD",
        "total": 2500,
        "reason": "duplicate",
        "refund": "none",
        "memo": "Billed twice in October",
    }
    data: dict[str, dict[str, Any]] = {
        "payment_failed": {
            "invoice_id": scene.invoice_id,
            "failure_class": "hard",
            "decline_code": "expired_card",
        },
        "payment_action_required": {"invoice_id": scene.invoice_id, "failure_class": "action_required"},
        "final_notice": {"invoice_id": scene.invoice_id, **final},
        "payment_recovered": {"invoice_id": scene.invoice_id},
        "card_expiring": {"card": card},
        "card_removed": {"card": card},
        "trial_will_end": {
            "subscription": {"id": "sub_1", "plan_code": "pro", "trial_end": "2026-11-24T12:00:00Z"},
            "plan_name": "Pro",
        },
        "credit_note_issued": {"invoice_id": scene.invoice_id, "credit_note": note},
        "refund_issued": {
            "invoice_id": scene.invoice_id,
            "credit_note": {**note, "refund": "provider"},
            "refund": {"amount": 2500},
        },
        "usage_alert": {
            "alert": {
                "id": "alr_1",
                "name": "Budget",
                "type": "spend_amount",
                "currency": "USD",
                "meter": None,
            },
            "trigger": {
                "threshold": 10000,
                "value": 12345,
                "period_start": "2026-11-01T00:00:00Z",
                "period_end": "2026-12-01T00:00:00Z",
            },
        },
    }
    for kind in KINDS:
        assert await queue(ctx, scene.tenant.id, scene.customer.id, kind=kind, key=kind, **data[kind])
    by_kind = {row.kind: row for row in await rows(ctx)}

    expected = {
        "payment_failed": ["$123.45", "the card has expired", "will not try this payment method again"],
        "payment_action_required": ["$123.45", "confirm the payment", f"Confirm payment: {UPDATE_URL}"],
        "final_notice": [
            "last attempt to collect it will be on November 28, 2026",
            "marked as uncollectible",
        ],
        "payment_recovered": ["received your payment of $123.45", "nothing more to do"],
        "card_expiring": ["Mastercard card ending in 4444 expires at the end of December 2026 (12/2026)"],
        "card_removed": ["Mastercard card ending in 4444 (expiry 12/2026) was removed"],
        "trial_will_end": ["trial of Pro ends on November 24, 2026", "the card on file will be charged"],
        "credit_note_issued": [
            "credit note CN-ACME-000001 of $25.00 on invoice ACME-000001",
            "for a duplicate charge",
            "It reduces what you owe",
            "Billed twice in October",
        ],
        "refund_issued": ["refunded $25.00 of invoice ACME-000001", "with credit note CN-ACME-000001"],
        "usage_alert": ["Your spend on usage in your billing period Nov 1", "has reached $123.45, past"],
    }
    for kind, phrases in expected.items():
        row = by_kind[kind]
        for phrase in phrases:
            assert phrase in row.text, (kind, phrase, row.text)
        assert any(fact in row.subject for fact in ("ACME-000001", "4444", "Pro trial", "past $100.00"))
        links = row.html.count('href="https://acme.example/billing/card?from=email&amp;x=1"')
        no_action = kind in ("payment_recovered", "credit_note_issued", "refund_issued", "usage_alert")
        assert links == (0 if no_action else 2), kind  # the button and the link in words
        assert f"Questions? Write to {SUPPORT}." in row.text
        assert row.from_address == f"Acme <{SUPPORT}>" and row.reply_to == SUPPORT


async def test_the_from_address_is_the_tenants_email_from(ctx: AppContext, scene: Scene) -> None:
    await brand(ctx, scene.tenant.id, email_from="Acme Billing <no-reply@acme.example>")
    await queue_failure(ctx, scene, attempt=1)
    await brand(ctx, scene.tenant.id, email_from="invoices@acme.example")
    await queue_failure(ctx, scene, attempt=2)
    assert [r.from_address for r in await rows(ctx)] == [
        "Acme Billing <no-reply@acme.example>",
        "Acme <invoices@acme.example>",
    ]


# --- SMTP: retries, backoff, failure -----------------------------------------------------


async def test_smtp_down_then_up_retries_with_backoff_and_sends_once(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    sink.stop()
    await queue_failure(ctx, scene, attempt=1)
    await queue_failure(ctx, scene, attempt=2)

    assert await dispatch_notifications(ctx) == 0
    queued = await rows(ctx)
    assert {(r.status, r.attempts) for r in queued} == {("queued", 1)}
    assert all("cannot connect to the SMTP server" in (r.last_error or "") for r in queued)
    assert {r.next_attempt_at for r in queued} == {ctx.clock.now() + timedelta(minutes=1)}

    sink.start()
    assert await dispatch_notifications(ctx) == 0  # not due yet: the backoff holds
    ctx.clock.advance(timedelta(seconds=59))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 0
    ctx.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 2

    assert {(r.status, r.attempts, r.last_error) for r in await rows(ctx)} == {("sent", 2, None)}
    assert len(sink.messages) == 2
    assert len({m["Message-ID"] for m in sink.messages}) == 2


async def test_a_temporary_refusal_is_retried_and_the_backoff_doubles(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    sink.fail_next(2, code=451)
    await queue_failure(ctx, scene)

    assert await dispatch_notifications(ctx) == 0
    ctx.clock.advance(retry_delay(1))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 0
    (row,) = await rows(ctx)
    assert row.attempts == 2 and "451" in (row.last_error or "")
    assert row.next_attempt_at == ctx.clock.now() + timedelta(minutes=2)
    ctx.clock.advance(retry_delay(2))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 1
    assert [code for (cmd, _, code) in sink.log if cmd == "DATA"] == [451, 451, 250]
    assert len(sink.messages) == 1


async def test_a_permanent_refusal_fails_at_once(ctx: AppContext, scene: Scene, sink: SmtpSink) -> None:
    use_smtp(ctx, sink)
    sink.refuse("jane@example.com", code=550)
    await queue_failure(ctx, scene)
    assert await dispatch_notifications(ctx) == 0
    (row,) = await rows(ctx)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 1, None)
    assert "550" in (row.last_error or "")
    ctx.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 0
    assert sink.messages == []


async def test_a_recipient_refused_for_now_is_tried_again(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    sink.refuse("jane@example.com", code=450)
    await queue_failure(ctx, scene)
    assert await dispatch_notifications(ctx) == 0
    (row,) = await rows(ctx)
    assert (row.status, row.attempts) == ("queued", 1)
    assert "recipient refused: 450" in (row.last_error or "")
    sink.accept("jane@example.com")
    ctx.clock.advance(retry_delay(1))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 1
    assert [(cmd, code) for (cmd, _, code) in sink.log] == [("RCPT", 450), ("RCPT", 250), ("DATA", 250)]
    assert len(sink.to("jane@example.com")) == 1


async def test_an_address_unfit_for_the_envelope_is_never_sent(sink: SmtpSink) -> None:
    transport = SmtpTransport(sink.url)
    good = Email("ntf_1", "billing@acme.example", "jane@example.com", b"Subject: one\r\n\r\nbody\r\n")
    try:
        with pytest.raises(DeliveryError) as refused:
            await transport.send(dataclasses.replace(good, recipient="jane@example.com> NOTIFY=NEVER"))
        assert refused.value.permanent
        await transport.send(good)  # the connection is still fit for the next email
    finally:
        await transport.close()
    assert [(cmd, code) for (cmd, _, code) in sink.log] == [("RCPT", 250), ("DATA", 250)]
    assert len(sink.messages) == 1


async def test_a_server_that_stops_answering_costs_one_timeout_and_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def greets_then_hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 silent.example ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250 silent.example\r\n")
        while await reader.read(1024):  # MAIL FROM and whatever follows: never answered
            pass

    monkeypatch.setattr(delivery, "SMTP_TIMEOUT_SECONDS", 0.3)
    server = await asyncio.start_server(greets_then_hangs, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = SmtpTransport(f"smtp://127.0.0.1:{port}")
    email = Email("ntf_1", "billing@acme.example", "jane@example.com", b"Subject: one\r\n\r\nbody\r\n")
    try:
        with pytest.raises(DeliveryError) as failed:
            await asyncio.wait_for(transport.send(email), timeout=5)
        assert not failed.value.permanent  # tried again later
        assert "TimeoutError" in str(failed.value)
    finally:
        await transport.close()
        server.close()


async def test_after_the_last_try_the_notification_is_failed(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    sink.stop()
    await queue_failure(ctx, scene)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await dispatch_notifications(ctx)
        (row,) = await rows(ctx)
        assert row.attempts == attempt
        ctx.clock.advance(retry_delay(attempt))  # type: ignore[attr-defined]
    assert (row.status, row.next_attempt_at) == ("failed", None)
    sink.start()
    ctx.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 0
    assert sink.messages == []


def test_the_backoff_grows_to_an_hour_and_gives_up_after_about_four_hours() -> None:
    delays = [retry_delay(n) for n in range(1, MAX_ATTEMPTS)]
    assert delays[:3] == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]
    assert max(delays) == timedelta(hours=1)
    assert timedelta(hours=3) < sum(delays, timedelta()) < timedelta(hours=5)


async def test_the_dispatcher_does_not_take_rows_another_one_holds(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    await queue_failure(ctx, scene)
    table = Notification.__table__
    lease_end = ctx.clock.now() + dispatch_module.LEASE
    async with ctx.database.transaction() as session:
        await session.execute(sa.update(table).values(claimed_by="clm_other", claim_expires_at=lease_end))
    assert await dispatch_notifications(ctx) == 0
    ctx.clock.advance(dispatch_module.LEASE)  # type: ignore[attr-defined]
    assert await dispatch_notifications(ctx) == 1  # the other one died: its lease ran out
    assert len(sink.messages) == 1


async def test_the_billing_runs_time_is_when_queued_emails_fall_due(ctx: AppContext, scene: Scene) -> None:
    later = ctx.clock.now() + timedelta(days=3)
    async with ctx.database.transaction() as session:
        await queue_notification(
            session,
            tenant_id=scene.tenant.id,
            customer_id=scene.customer.id,
            kind="payment_failed",
            dedupe_key="payment_failed:x:2",
            data={"invoice_id": scene.invoice_id},
            at=later,
        )
    assert await dispatch_notifications(ctx) == 0
    assert await dispatch_notifications(ctx, at=later) == 1
    (row,) = await rows(ctx)
    assert row.sent_at == later


# --- Several dispatchers -----------------------------------------------------------------


@pytest.fixture
async def second_ctx(ctx: AppContext) -> AsyncIterator[AppContext]:
    """Another process's context: its own engine and connection pool on the same database."""
    other = AppContext.create(ctx.settings, clock=ctx.clock)
    try:
        yield other
    finally:
        await other.close()


@pytest.mark.postgres_only
async def test_two_dispatchers_at_once_send_each_email_exactly_once(
    ctx: AppContext, second_ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    count = 3 * dispatch_module.BATCH + 17
    async with ctx.database.transaction() as session:
        for n in range(count):
            await queue_notification(
                session,
                tenant_id=scene.tenant.id,
                customer_id=scene.customer.id,
                kind="payment_failed",
                dedupe_key=f"payment_failed:{scene.invoice_id}:{n}",
                data={"invoice_id": scene.invoice_id, "attempt": n},
                at=ctx.clock.now(),
            )
    use_smtp(ctx, sink)
    use_smtp(second_ctx, sink)

    sent = await asyncio.gather(*[dispatch_notifications(c) for c in (ctx, second_ctx, ctx, second_ctx)])

    assert sum(sent) == count
    assert sum(1 for n in sent if n > 0) >= 2, f"one dispatcher did all the work: {sent}"
    ids = Counter(str(m["Message-ID"]) for m in sink.messages)
    assert len(ids) == count and set(ids.values()) == {1}
    assert {(r.status, r.attempts) for r in await rows(ctx)} == {("sent", 1)}


# --- Tenant emails from the outbox -------------------------------------------------------


async def test_a_disabled_webhook_endpoint_emails_the_tenant_once(
    ctx: AppContext, scene: Scene, sink: SmtpSink
) -> None:
    use_smtp(ctx, sink)
    await outbox.fan_out(ctx, jobs.CONSUMERS)  # the scene's own events (its subscription's)
    payload = {"endpoint_id": "whe_1", "url": "https://hooks.acme.example/billing"}
    async with ctx.database.transaction() as session:
        event_id = await outbox.emit(
            session,
            tenant_id=scene.tenant.id,
            topic="webhook_endpoint.disabled",
            payload=payload,
            now=ctx.clock.now(),
        )
    (consumer,) = [c for c in jobs.CONSUMERS if c.name == "notifications"]
    assert await outbox.fan_out(ctx, jobs.CONSUMERS) == 1
    assert await outbox.dispatch(ctx, consumer) == 1
    message = outbox.Message(
        event_id, scene.tenant.id, "webhook_endpoint.disabled", payload, ctx.clock.now(), 2
    )
    await consumer.handle(ctx, message)  # delivered again: at least once
    assert await dispatch_notifications(ctx) == 1

    (row,) = await rows(ctx)
    assert (row.kind, row.customer_id, row.to_address) == ("webhook_endpoint_disabled", None, SUPPORT)
    (email,) = sink.messages
    assert email["Subject"] == "Webhook endpoint disabled: https://hooks.acme.example/billing"
    assert (
        "disabled your webhook endpoint https://hooks.acme.example/billing (whe_1) on November 21, 2026"
        in body(email)
    )


# --- API ---------------------------------------------------------------------------------


async def test_the_list_shows_every_email_with_filters(
    client: httpx.AsyncClient, ctx: AppContext, scene: Scene
) -> None:
    await queue_failure(ctx, scene, attempt=1)
    await dispatch_notifications(ctx)
    card = {"id": "card_1", "brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2027}
    await queue(
        ctx, scene.tenant.id, scene.customer.id, kind="card_expiring", key="card_expiring:1", card=card
    )
    other = await make_customer(ctx, scene.tenant.id, "other", email="other@example.com")
    await queue(ctx, scene.tenant.id, other.id, kind="card_removed", key="card_removed:2", card=card)

    response = await client.get("/v1/notifications", headers=scene.tenant.headers(Scope.FINANCE))
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert [i["kind"] for i in items] == ["card_removed", "card_expiring", "payment_failed"]
    sent = items[2]
    assert {k: sent[k] for k in ("customer", "to", "status", "dedupe_key", "attempts", "invoice")} == {
        "customer": scene.customer.id,
        "to": "jane@example.com",
        "status": "sent",
        "dedupe_key": f"payment_failed:{scene.invoice_id}:1",
        "attempts": 1,
        "invoice": scene.invoice_id,
    }
    assert sent["id"].startswith("ntf_") and sent["subject"].startswith("Acme: your payment of $123.45")
    assert sent["created_at"] == sent["sent_at"] == "2026-11-21T12:00:00Z"
    assert items[0]["status"] == "queued" and items[0]["sent_at"] is None

    async def kinds(**params: str) -> list[str]:
        answer = await client.get("/v1/notifications", headers=scene.tenant.headers(), params=params)
        assert answer.status_code == 200, answer.text
        return [i["kind"] for i in answer.json()["data"]]

    assert await kinds(customer="jane") == ["card_expiring", "payment_failed"]
    assert await kinds(customer=scene.customer.id, kind="card_expiring") == ["card_expiring"]
    assert await kinds(status="sent") == ["payment_failed"]
    assert await kinds(invoice=scene.invoice_id) == ["payment_failed"]
    assert await kinds(limit="1") == ["card_removed"]
    bad = await client.get("/v1/notifications", headers=scene.tenant.headers(), params={"kind": "spam"})
    assert bad.status_code in (400, 422)


async def test_the_list_never_shows_another_tenants_emails(
    client: httpx.AsyncClient, ctx: AppContext, scene: Scene, make_tenant: MakeTenant
) -> None:
    await queue_failure(ctx, scene)
    other = await make_tenant(name="Other")
    response = await client.get("/v1/notifications", headers=other.headers())
    assert response.status_code == 200 and response.json()["data"] == []
    foreign = await client.get("/v1/notifications", headers=other.headers(), params={"customer": "jane"})
    assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"
    foreign = await client.get(
        "/v1/notifications", headers=other.headers(), params={"customer": scene.customer.id}
    )
    assert foreign.status_code == 404
    ingest = await client.get("/v1/notifications", headers=scene.tenant.headers(Scope.INGEST))
    assert ingest.status_code == 403


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_the_preview_renders_each_kind_with_the_callers_branding(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle, kind: str
) -> None:
    await brand(ctx, tenant.id, name="Acme <Labs>")
    response = await client.get(f"/v1/notifications/preview/{kind}", headers=tenant.headers(Scope.FINANCE))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Acme &lt;Labs&gt;" in response.text and "<Labs>" not in response.text
    no_action = (
        "webhook_endpoint_disabled",
        "payment_recovered",
        "credit_note_issued",
        "refund_issued",
        "usage_alert",
    )
    if kind not in no_action:
        assert 'href="https://acme.example/billing/card?from=email&amp;x=1"' in response.text

    text = await client.get(
        f"/v1/notifications/preview/{kind}", headers=tenant.headers(), params={"format": "text"}
    )
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "Acme <Labs>" in text.text and "<p" not in text.text


async def test_the_preview_as_json_follows_the_locale_asked_and_the_tenants_currency(
    client: httpx.AsyncClient, ctx: AppContext, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(name="Acme", currency="EUR")
    response = await client.get(
        "/v1/notifications/preview/payment_failed",
        headers=tenant.headers(),
        params={"format": "json", "locale": "de"},
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["kind"] == "payment_failed"
    assert preview["subject"].startswith("Acme: your payment of 123,45\xa0€ failed")
    assert "123,45\xa0€" in preview["text"] and "<strong>123,45\xa0€</strong>" in preview["html"]


async def test_the_preview_of_an_unknown_kind_is_404_and_needs_a_reading_scope(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    missing = await client.get("/v1/notifications/preview/spam", headers=tenant.headers())
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    ingest = await client.get(
        "/v1/notifications/preview/payment_failed", headers=tenant.headers(Scope.INGEST)
    )
    assert ingest.status_code == 403


def test_the_dispatcher_runs_as_a_tick() -> None:
    assert "notifications" in {t.name for t in jobs.ticks()}
