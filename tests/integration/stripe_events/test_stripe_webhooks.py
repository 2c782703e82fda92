"""POST /webhooks/stripe/{tenant_id}: the attack corpus, the answers of API.md, rotation, idempotency.

Every signature here is made by stripe-python (``WebhookSignature.generate_signature_header``)
and every body is in Stripe's own shape (tests/stripe_payloads.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from billing import jobs
from billing.core.context import AppContext
from billing.core.outbox import OutboxEvent
from billing.stripe_events.models import StripeEvent
from billing.stripe_events.process import process_due
from billing.tenants.models import Tenant
from tests import stripe_payloads as sp
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

SECRET = "whsec_test_5f2b9d0c1e7a4b3c8d6e0f1a2b3c4d5e"
NEW_SECRET = "whsec_test_rolled_9a8b7c6d5e4f3a2b1c0d9e8f"
OTHER_SECRET = "whsec_test_othertenant_00112233445566778899"
NOW = sp.FROZEN_TS
EXPIRING = "customer.source.expiring"


async def set_secrets(
    client: httpx.AsyncClient, tenant: TenantHandle, secrets: list[str], **settings: Any
) -> None:
    body = {"stripe_webhook_secrets": secrets, **settings}
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json=body)
    assert response.status_code == 200, response.text


async def deliver(
    client: httpx.AsyncClient,
    tenant_id: str,
    body: str | bytes,
    header: str | None,
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"content-type": "application/json; charset=utf-8", **(headers or {})}
    if header is not None:
        sent["Stripe-Signature"] = header
    return await client.post(f"/webhooks/stripe/{tenant_id}", content=body, headers=sent)


async def send(
    client: httpx.AsyncClient, tenant_id: str, evt: dict[str, Any], secret: str = SECRET, *, at: int = NOW
) -> httpx.Response:
    """Deliver ``evt`` as Stripe would: pretty-printed and freshly signed."""
    payload = sp.encode(evt)
    return await deliver(client, tenant_id, payload, sp.signature_header(payload, secret, at))


async def stored(ctx: AppContext) -> list[sa.Row[Any]]:
    async with ctx.database.read() as session:
        query = sa.select(StripeEvent.__table__).order_by(StripeEvent.id)
        return list((await session.execute(query)).all())


async def outbox_count(ctx: AppContext) -> int:
    async with ctx.database.read() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) or 0)


def expiring_event(customer: str = "cus_Stripe42", **kwargs: Any) -> dict[str, Any]:
    return sp.event(EXPIRING, sp.card(customer), **kwargs)


@pytest.fixture
async def stripe_tenant(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    await set_secrets(client, tenant, [SECRET])
    return tenant


# --- the attack corpus: 400 invalid_signature, nothing stored ------------------------------------


@dataclass(frozen=True)
class Attack:
    """A forged delivery: ``build(payload, tenant_id, other_tenant_id)`` -> (tenant id, body, headers)."""

    name: str
    build: Callable[[str, str, str], tuple[str, bytes, list[tuple[str, str]]]]


def _sig(payload: str | bytes, secret: str = SECRET, at: int = NOW) -> str:
    text = payload.decode() if isinstance(payload, bytes) else payload
    return sp.signature_header(text, secret, at)


def _v1(header: str) -> str:
    return header.split(",v1=")[1]


def _one(header: str | None) -> list[tuple[str, str]]:
    return [] if header is None else [("Stripe-Signature", header)]


def _plain(name: str, header: Callable[[str], str | None], tenant: str = "own") -> Attack:
    def build(payload: str, own: str, other: str) -> tuple[str, bytes, list[tuple[str, str]]]:
        target = {"own": own, "other": other}.get(tenant, tenant)
        return target, payload.encode(), _one(header(payload))

    return Attack(name, build)


def _tampered(name: str, change: Callable[[str], str]) -> Attack:
    """Signed correctly, then the body is changed in transit."""

    def build(payload: str, own: str, _other: str) -> tuple[str, bytes, list[tuple[str, str]]]:
        return own, change(payload).encode(), _one(_sig(payload))

    return Attack(name, build)


ATTACKS = [
    _plain("no header", lambda p: None),
    _plain("empty header", lambda p: ""),
    _plain("garbage header", lambda p: "garbage"),
    _plain("wrong secret", lambda p: _sig(p, "whsec_attacker_guess_0123456789abcdef")),
    _plain("secret without its whsec_ prefix", lambda p: _sig(p, SECRET.removeprefix("whsec_"))),
    _plain("signed with another tenant's secret", lambda p: _sig(p, OTHER_SECRET)),
    _plain("own secret, delivered to another tenant", lambda p: _sig(p), tenant="other"),
    _plain("unknown tenant", lambda p: _sig(p), tenant="ten_0000000000000000000000unkn"),
    _plain("not a tenant id", lambda p: _sig(p), tenant="not-a-tenant"),
    _tampered("amount changed", lambda p: p.replace('"exp_year": 2026', '"exp_year": 2031')),
    _tampered("re-serialised compactly", lambda p: json.dumps(json.loads(p), separators=(",", ":"))),
    _tampered("trailing newline", lambda p: p + "\n"),
    _tampered("livemode flipped", lambda p: p.replace('"livemode": false', '"livemode": true', 1)),
    _plain("stale: 301 s old", lambda p: _sig(p, at=NOW - 301)),
    _plain("future: 301 s ahead", lambda p: _sig(p, at=NOW + 301)),
    _plain("replayed an hour later", lambda p: _sig(p, at=NOW - 3600)),
    _plain("replayed three days later", lambda p: _sig(p, at=NOW - 3 * 86_400)),
    _plain("timestamp in milliseconds", lambda p: _sig(p, at=NOW * 1000)),
    _plain("timestamp changed, signature kept", lambda p: f"t={NOW - 1},v1={_v1(_sig(p))}"),
    _plain("only v0 (downgrade)", lambda p: f"t={NOW},v0={_v1(_sig(p))}"),
    _plain("valid v0, wrong v1", lambda p: f"t={NOW},v1={'0' * 64},v0={_v1(_sig(p))}"),
    _plain("no timestamp", lambda p: f"v1={_v1(_sig(p))}"),
    _plain("two timestamps", lambda p: f"t={NOW},{_sig(p)}"),
    _plain("timestamp not a number", lambda p: f"t=now,v1={_v1(_sig(p))}"),
    _plain("signed timestamp", lambda p: f"t=+{NOW},v1={_v1(_sig(p))}"),
    _plain("upper-case hex", lambda p: f"t={NOW},v1={_v1(_sig(p)).upper()}"),
    _plain("truncated signature", lambda p: f"t={NOW},v1={_v1(_sig(p))[:32]}"),
    _plain("space after the comma", lambda p: f"t={NOW}, v1={_v1(_sig(p))}"),
    _plain("signature of another body", lambda p: _sig(sp.encode(expiring_event()))),
    _plain("empty v1", lambda p: f"t={NOW},v1="),
    _plain("item without =", lambda p: f"{_sig(p)},v1"),
    _plain("too long", lambda p: f"{_sig(p)}," + ",".join(["x=y"] * 1000)),
    Attack(
        "two Stripe-Signature headers",
        lambda p, own, _o: (own, p.encode(), [("Stripe-Signature", _sig(p)), ("Stripe-Signature", _sig(p))]),
    ),
]


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "keys cached"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_a_forged_delivery_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    ctx: AppContext,
    stripe_tenant: TenantHandle,
    make_tenant: Any,
    attack: Attack,
    warm: bool,
) -> None:
    other = await make_tenant("Other")
    await set_secrets(client, other, [OTHER_SECRET])
    before = []
    if warm:  # valid deliveries first, so that the receiver holds both tenants' keys
        assert (await send(client, stripe_tenant.id, expiring_event())).json() == {"status": "received"}
        assert (await send(client, other.id, expiring_event(), OTHER_SECRET)).json() == {"status": "received"}
        before = await stored(ctx)
    payload = sp.encode(expiring_event())
    tenant_id, body, headers = attack.build(payload, stripe_tenant.id, other.id)
    response = await client.post(
        f"/webhooks/stripe/{tenant_id}",
        content=body,
        headers=[("content-type", "application/json"), *headers],
    )
    problem = assert_problem(response, 400, "invalid_signature")
    # One generic answer, whatever went wrong: nothing tells an attacker which check failed.
    assert problem["detail"] == "The Stripe-Signature header does not verify this request"
    assert set(problem) <= {"type", "title", "status", "detail", "code", "request_id"}
    assert await stored(ctx) == before
    assert await outbox_count(ctx) == 0


async def test_a_tenant_without_secrets_refuses_everything(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    payload = sp.encode(expiring_event())
    response = await deliver(client, tenant.id, payload, _sig(payload))
    assert_problem(response, 400, "invalid_signature")
    assert await stored(ctx) == []


async def test_an_api_key_is_no_credential_here(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    payload = sp.encode(expiring_event())
    response = await deliver(client, stripe_tenant.id, payload, None, headers=stripe_tenant.headers())
    assert_problem(response, 400, "invalid_signature")
    assert await stored(ctx) == []


async def test_unknown_tenant_and_bad_signature_answer_identically(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle
) -> None:
    payload = sp.encode(expiring_event())
    unknown = await deliver(client, "ten_01jc0000000000000000000000", payload, _sig(payload))
    wrong = await deliver(client, stripe_tenant.id, payload, _sig(payload, OTHER_SECRET))
    assert unknown.status_code == wrong.status_code == 400
    strip = {"request_id"}
    assert {k: v for k, v in unknown.json().items() if k not in strip} == {
        k: v for k, v in wrong.json().items() if k not in strip
    }
    assert unknown.headers["content-type"] == wrong.headers["content-type"]


# --- verified, but not a Stripe event: 400 invalid_payload ----------------------------------------

NOT_EVENTS = {
    "not JSON": b"{not json",
    "empty body": b"",
    "a JSON array": b"[]",
    "a JSON string": b'"evt_1"',
    "not an event object": json.dumps({**expiring_event(), "object": "customer"}).encode(),
    "no id": json.dumps({k: v for k, v in expiring_event().items() if k != "id"}).encode(),
    "id of another kind": json.dumps({**expiring_event(), "id": "cus_123"}).encode(),
    "no type": json.dumps({k: v for k, v in expiring_event().items() if k != "type"}).encode(),
    "created as text": json.dumps({**expiring_event(), "created": "yesterday"}).encode(),
    "livemode as text": json.dumps({**expiring_event(), "livemode": "false"}).encode(),
    "no data": json.dumps({k: v for k, v in expiring_event().items() if k != "data"}).encode(),
    "data.object not an object": json.dumps({**expiring_event(), "data": {"object": "card_1"}}).encode(),
    "not UTF-8": sp.encode(expiring_event()).replace('"Visa"', '"Vis\xe9"').encode("latin-1"),
}


@pytest.mark.parametrize("body", list(NOT_EVENTS.values()), ids=list(NOT_EVENTS))
async def test_a_signed_body_that_is_not_a_stripe_event_is_invalid_payload(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, body: bytes
) -> None:
    # stripe-python signs text; bytes that are not UTF-8 are signed by hand, over the exact bytes.
    header = sp.signature_header(body.decode(), SECRET, NOW) if body.isascii() else _hand_signed(body)
    response = await deliver(client, stripe_tenant.id, body, header)
    assert_problem(response, 400, "invalid_payload")
    assert await stored(ctx) == []


def _hand_signed(body: bytes) -> str:
    digest = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={NOW},v1={digest}"


# --- accepted deliveries ------------------------------------------------------------------------


async def test_a_new_event_is_stored_with_its_raw_body_then_acknowledged(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    evt = expiring_event()
    payload = sp.encode(evt)
    response = await deliver(client, stripe_tenant.id, payload, _sig(payload))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "received"}
    (row,) = await stored(ctx)
    assert (row.tenant_id, row.stripe_event_id, row.type) == (stripe_tenant.id, evt["id"], EXPIRING)
    assert bytes(row.payload) == payload.encode()  # byte for byte, whitespace included
    assert (row.status, row.attempts, row.last_error, row.handled_at) == ("received", 0, None, None)
    assert row.livemode is False and row.api_version == sp.API_VERSION
    assert row.created_at.timestamp() == evt["created"]
    assert row.received_at == ctx.clock.now()
    assert row.id.startswith("ste_")


async def test_a_duplicate_is_acknowledged_and_changes_nothing(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    evt = expiring_event()
    assert (await send(client, stripe_tenant.id, evt)).json() == {"status": "received"}
    before = await stored(ctx)
    # Stripe signs every retry afresh; a retry may also come after processing.
    again = await send(client, stripe_tenant.id, evt, at=NOW + 60)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert await stored(ctx) == before


async def test_the_same_event_id_is_stored_per_tenant(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, make_tenant: Any
) -> None:
    other = await make_tenant("Other")
    await set_secrets(client, other, [OTHER_SECRET])
    evt = expiring_event()
    assert (await send(client, stripe_tenant.id, evt)).json() == {"status": "received"}
    assert (await send(client, other.id, evt, OTHER_SECRET)).json() == {"status": "received"}
    assert sorted(r.tenant_id for r in await stored(ctx)) == sorted([stripe_tenant.id, other.id])


@pytest.mark.parametrize(
    "evt",
    [
        sp.event("invoice.paid", {"id": "in_1", "object": "invoice"}),
        sp.event("charge.failed", {"id": "ch_1", "object": "charge"}),
        sp.event("payment_method.detached", sp.payment_method(None)),
        sp.event("payment_method.automatically_updated", sp.payment_method("cus_1")),
        expiring_event(livemode=True),
    ],
    ids=["unhandled type", "another unhandled type", "opt-in type", "other opt-in type", "livemode mismatch"],
)
async def test_other_types_and_the_other_mode_are_ignored_and_not_stored(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, evt: dict[str, Any]
) -> None:
    response = await send(client, stripe_tenant.id, evt)
    assert response.status_code == 200 and response.json() == {"status": "ignored"}
    assert await stored(ctx) == []


async def test_a_live_mode_tenant_stores_live_events_only(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    await set_secrets(client, stripe_tenant, [SECRET], stripe_livemode=True)
    assert (await send(client, stripe_tenant.id, expiring_event())).json() == {"status": "ignored"}
    assert (await send(client, stripe_tenant.id, expiring_event(livemode=True))).json() == {
        "status": "received"
    }
    assert [r.livemode for r in await stored(ctx)] == [True]


async def test_payment_method_events_are_stored_once_the_tenant_opts_in(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    detached = sp.event("payment_method.detached", sp.payment_method(None))
    assert (await send(client, stripe_tenant.id, detached)).json() == {"status": "ignored"}
    await set_secrets(client, stripe_tenant, [SECRET], stripe_payment_method_events=True)
    body = (await client.get("/v1/tenant", headers=stripe_tenant.headers())).json()
    assert body["stripe_payment_method_events"] is True
    assert (await send(client, stripe_tenant.id, detached)).json() == {"status": "received"}
    updated = sp.event("payment_method.automatically_updated", sp.payment_method("cus_1"))
    assert (await send(client, stripe_tenant.id, updated)).json() == {"status": "received"}
    assert [r.type for r in await stored(ctx)] == [
        "payment_method.detached",
        "payment_method.automatically_updated",
    ]


@pytest.mark.parametrize(
    "variant",
    [
        {"api_version": None},
        {"request": "req_legacy123"},
        {"request": {"id": "req_123", "idempotency_key": "0f8c1b2a-idem"}},
        {"request": None},
    ],
    ids=["api_version null", "request as a string", "request with ids", "request null"],
)
async def test_stripe_envelope_variations_are_accepted(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, variant: dict[str, Any]
) -> None:
    evt = {**expiring_event(), **variant, "some_future_field": {"nested": [1, 2]}}
    assert (await send(client, stripe_tenant.id, evt)).json() == {"status": "received"}
    (row,) = await stored(ctx)
    assert row.api_version == evt["api_version"]


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
async def test_timestamps_within_300_seconds_either_way_are_accepted(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, skew: int
) -> None:
    response = await send(client, stripe_tenant.id, expiring_event(), at=NOW + skew)
    assert response.json() == {"status": "received"}


# --- secrets: rotation, several v1, v0 ----------------------------------------------------------


async def test_secret_rotation_accepts_both_secrets_until_the_old_one_is_removed(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    await set_secrets(client, stripe_tenant, [SECRET, NEW_SECRET])
    assert (await send(client, stripe_tenant.id, expiring_event(), SECRET)).json() == {"status": "received"}
    assert (await send(client, stripe_tenant.id, expiring_event(), NEW_SECRET)).json() == {
        "status": "received"
    }
    await set_secrets(client, stripe_tenant, [NEW_SECRET])
    assert_problem(await send(client, stripe_tenant.id, expiring_event(), SECRET), 400, "invalid_signature")
    assert (await send(client, stripe_tenant.id, expiring_event(), NEW_SECRET)).json() == {
        "status": "received"
    }
    assert len(await stored(ctx)) == 3


async def test_any_matching_v1_among_several_is_enough(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    # While Stripe rolls the endpoint secret it signs with both, old and new.
    await set_secrets(client, stripe_tenant, [NEW_SECRET])
    payload = sp.encode(expiring_event())
    header = f"{_sig(payload, SECRET)},v1={_v1(_sig(payload, NEW_SECRET))}"
    assert (await deliver(client, stripe_tenant.id, payload, header)).json() == {"status": "received"}
    decoys = f"t={NOW},v1={'a' * 64},v1={_v1(_sig(payload, NEW_SECRET))},v1={'b' * 64}"
    again = await deliver(client, stripe_tenant.id, payload, decoys)
    assert again.json() == {"status": "duplicate"}


async def test_v0_beside_a_valid_v1_is_ignored(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    payload = sp.encode(expiring_event())
    header = f"{_sig(payload)},v0={'f' * 64}"
    assert (await deliver(client, stripe_tenant.id, payload, header)).json() == {"status": "received"}


async def test_settings_changed_after_a_delivery_apply_to_the_next_one(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    """The receiver keeps the keys it read; a change to them must still apply at once."""
    assert (await send(client, stripe_tenant.id, expiring_event())).json() == {"status": "received"}
    await set_secrets(client, stripe_tenant, [SECRET], stripe_livemode=True)
    assert (await send(client, stripe_tenant.id, expiring_event())).json() == {"status": "ignored"}
    await set_secrets(client, stripe_tenant, [SECRET], stripe_payment_method_events=True)
    detached = sp.event("payment_method.detached", sp.payment_method(None), livemode=True)
    assert (await send(client, stripe_tenant.id, detached)).json() == {"status": "received"}
    await set_secrets(client, stripe_tenant, [SECRET], stripe_payment_method_events=False)
    again = sp.event("payment_method.detached", sp.payment_method(None), livemode=True)
    assert (await send(client, stripe_tenant.id, again)).json() == {"status": "ignored"}
    assert len(await stored(ctx)) == 2


async def test_a_tenant_deleted_after_a_delivery_refuses_the_next(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    assert (await send(client, stripe_tenant.id, expiring_event())).json() == {"status": "received"}
    async with ctx.database.transaction() as session:
        await session.execute(sa.delete(Tenant).where(Tenant.id == stripe_tenant.id))
    assert_problem(await send(client, stripe_tenant.id, expiring_event()), 400, "invalid_signature")


async def test_concurrent_deliveries_share_transactions(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send(client, stripe_tenant.id, expiring_event())  # keys read and kept
    transactions = 0
    real = ctx.database.transaction

    def counted() -> Any:
        nonlocal transactions
        transactions += 1
        return real()

    monkeypatch.setattr(ctx.database, "transaction", counted)
    responses = await asyncio.gather(*[send(client, stripe_tenant.id, expiring_event()) for _ in range(250)])
    assert [r.json() for r in responses] == [{"status": "received"}] * 250
    assert len(await stored(ctx)) == 251
    # at most 100 events per transaction, and far fewer transactions than events
    assert 3 <= transactions < 50


# --- idempotency under concurrency, storage failure ------------------------------------------------


@pytest.mark.postgres_only
async def test_fifty_concurrent_deliveries_of_one_event_store_one_row_with_one_effect(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    from tests.integration.stripe_events.test_stripe_event_processing import customer, recorded_topics

    await customer(client, stripe_tenant, provider_customer_id="cus_Stripe42")
    evt = expiring_event("cus_Stripe42")
    with recorded_topics() as topics:
        responses = await asyncio.gather(
            *[send(client, stripe_tenant.id, evt, at=NOW - n) for n in range(50)]
        )
        statuses = sorted(r.json()["status"] for r in responses)
        assert all(r.status_code == 200 for r in responses)
        assert statuses == ["duplicate"] * 49 + ["received"]
        assert len(await stored(ctx)) == 1
        await asyncio.gather(*[process_due(ctx) for _ in range(5)])
        await _dispatch(ctx)
    assert [m.topic for m in topics] == ["customer.payment_method_expiring"]
    assert [r.status for r in await stored(ctx)] == ["processed"]


async def test_concurrent_deliveries_of_many_events_are_each_stored_once(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    events = [expiring_event() for _ in range(20)]
    sends = [send(client, stripe_tenant.id, evt, at=NOW - k) for evt in events for k in range(3)]
    responses = await asyncio.gather(*sends)
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("received") == 20 and statuses.count("duplicate") == 40
    assert sorted(r.stripe_event_id for r in await stored(ctx)) == sorted(e["id"] for e in events)


async def _dispatch(ctx: AppContext) -> None:

    await jobs.dispatch_outbox(ctx)


def _broken(error: Exception) -> Any:
    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        raise error
        yield

    return session


async def test_an_event_that_cannot_be_stored_is_answered_503_so_that_stripe_retries(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    evt = expiring_event()
    error = OperationalError("INSERT INTO stripe_events", {}, OSError("disk I/O error"))
    with monkeypatch.context() as patch:
        patch.setattr(ctx.database, "transaction", _broken(error))
        response = await send(client, stripe_tenant.id, evt)
    problem = assert_problem(response, 503, "event_not_stored")
    assert "disk" not in response.text and "INSERT" not in response.text
    assert problem["detail"] == "The event could not be stored; Stripe will retry"
    assert await stored(ctx) == []
    # Stripe's retry, once the database is back, is stored as new.
    assert (await send(client, stripe_tenant.id, evt, at=NOW + 30)).json() == {"status": "received"}


async def test_a_database_that_cannot_be_read_is_503_not_400(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctx.database, "read", _broken(OSError("connection refused")))
    response = await send(client, stripe_tenant.id, expiring_event())
    assert_problem(response, 503, "event_not_stored")
    assert "refused" not in response.text


async def test_a_body_over_the_size_limit_is_refused_unread(
    client: httpx.AsyncClient, ctx: AppContext, stripe_tenant: TenantHandle
) -> None:
    evt = expiring_event()
    evt["data"]["object"]["metadata"] = {"padding": "x" * (ctx.settings.max_body_bytes + 1)}
    response = await send(client, stripe_tenant.id, evt)
    assert response.status_code == 413
    assert await stored(ctx) == []


# --- operations ---------------------------------------------------------------------------------


def _counter(text: str, type_: str, outcome: str) -> float:
    labels = f'outcome="{re.escape(outcome)}",type="{re.escape(type_)}"'
    pattern = rf"^billing_stripe_webhook_deliveries_total\{{{labels}\}} ([0-9.e+]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_deliveries_are_counted_by_type_and_outcome(
    client: httpx.AsyncClient, stripe_tenant: TenantHandle
) -> None:
    wanted = [
        (EXPIRING, "received"),
        (EXPIRING, "duplicate"),
        ("other", "ignored"),
        ("unverified", "invalid_signature"),
        ("unknown", "invalid_payload"),
    ]
    before = (await client.get("/metrics")).text
    evt = expiring_event()
    await send(client, stripe_tenant.id, evt)
    await send(client, stripe_tenant.id, evt)
    await send(client, stripe_tenant.id, sp.event("invoice.paid", {"id": "in_1", "object": "invoice"}))
    await send(client, stripe_tenant.id, evt, OTHER_SECRET)
    await deliver(client, stripe_tenant.id, "[]", _sig("[]"))
    after = (await client.get("/metrics")).text
    for type_, outcome in wanted:
        assert _counter(after, type_, outcome) - _counter(before, type_, outcome) == 1, (type_, outcome)
    stripe_lines = [line for line in after.splitlines() if line.startswith("billing_stripe_webhook_")]
    assert stripe_lines and not any("invoice.paid" in line for line in stripe_lines)  # unhandled: no label


async def test_the_receiver_is_not_part_of_the_api_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert not any(path.startswith("/webhooks") for path in paths)
    assert "/v1/stripe-events" in paths and "/v1/stripe-events/{stored_event_id}/reprocess" in paths
