"""The Stripe fake, driven by the real stripe SDK (StripeClient + HTTPXClient) over HTTP."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import stripe

from billing.core.clock import FrozenClock
from tests.conftest import eventually
from tests.fakes import FakeStripe
from tests.fakes.stripe_server import FormError, fake_stripe, parse_form  # noqa: F401 - a fixture

API_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
OTHER_KEY = "sk_test_Other0000000000000000000"
PI_ID = re.compile(r"pi_[A-Za-z0-9]{24}")

MakeClient = Callable[..., stripe.StripeClient]


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[FakeStripe]:
    with FakeStripe(clock=clock, seed=7) as server:
        yield server
    assert server.errors == []


@pytest.fixture
async def make_client(fake: FakeStripe) -> AsyncIterator[MakeClient]:
    """StripeClients against the fake; their httpx clients are closed after the test. The default
    timeout is for a loaded machine (tests run beside each other); hang tests set their own."""
    opened: list[stripe.HTTPXClient] = []

    def make(*, api_key: str = API_KEY, timeout: float = 10.0, retries: int = 0) -> stripe.StripeClient:
        http_client = stripe.HTTPXClient(timeout=timeout)
        opened.append(http_client)
        return stripe.StripeClient(
            api_key, base_addresses={"api": fake.url}, http_client=http_client, max_network_retries=retries
        )

    yield make
    for http_client in opened:
        await http_client.close_async()


@pytest.fixture
def client(make_client: MakeClient) -> stripe.StripeClient:
    return make_client()


def charge(payment_method: str = "pm_card_visa", *, invoice: str = "inv_1", **extra: Any) -> dict[str, Any]:
    return {
        "amount": 7300,
        "currency": "usd",
        "customer": "cus_Test",
        "payment_method": payment_method,
        "off_session": True,
        "confirm": True,
        "metadata": {"invoice_id": invoice, "tenant_id": "ten_1"},
        **extra,
    }


async def create(client: stripe.StripeClient, params: dict[str, Any], key: str | None = None) -> Any:
    options = {"idempotency_key": key} if key else {}
    return await client.v1.payment_intents.create_async(params, options=options)  # type: ignore[arg-type]


# --- charging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("payment_method", ["pm_card_visa", "pm_card_mastercard"])
async def test_a_good_card_succeeds(
    fake: FakeStripe, client: stripe.StripeClient, clock: FrozenClock, payment_method: str
) -> None:
    intent = await create(client, charge(payment_method), key="inv_1-attempt-1")

    assert PI_ID.fullmatch(intent.id)
    assert intent.object == "payment_intent"
    assert intent.status == "succeeded"
    assert (intent.amount, intent.amount_received, intent.currency) == (7300, 7300, "usd")
    assert (intent.customer, intent.payment_method) == ("cus_Test", payment_method)
    assert intent.metadata.to_dict() == {"invoice_id": "inv_1", "tenant_id": "ten_1"}
    assert intent.livemode is False
    assert intent.last_payment_error is None
    assert intent.created == int(clock.now().timestamp())
    assert intent.latest_charge.startswith("ch_")
    assert intent.last_response.headers["Request-Id"].startswith("req_")

    latest = await client.v1.charges.retrieve_async(intent.latest_charge)
    assert (latest.status, latest.amount, latest.paid, latest.payment_intent) == (
        "succeeded",
        7300,
        True,
        intent.id,
    )
    assert [pi["id"] for pi in fake.charges(invoice_id="inv_1", status="succeeded")] == [intent.id]
    assert fake.charges(invoice_id="inv_2") == []


async def test_requests_are_recorded_with_the_parsed_form(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    await create(client, charge(), key="key-1")

    [request] = fake.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/payment_intents", 200)
    assert request.idempotency_key == "key-1" == request.header("idempotency-key")
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert request.form == {
        "amount": "7300",
        "currency": "usd",
        "customer": "cus_Test",
        "payment_method": "pm_card_visa",
        "off_session": "true",
        "confirm": "true",
        "metadata": {"invoice_id": "inv_1", "tenant_id": "ten_1"},
    }


DECLINES = [
    ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ("pm_card_chargeDeclinedLostCard", "card_declined", "lost_card"),
    ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
    ("pm_card_chargeDeclinedFraudulent", "card_declined", "fraudulent"),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error"),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ("pm_card_authenticationRequired", "authentication_required", "authentication_required"),
]


@pytest.mark.parametrize(("payment_method", "code", "decline_code"), DECLINES)
async def test_a_decline_is_a_card_error_with_the_payment_intent(
    fake: FakeStripe, client: stripe.StripeClient, payment_method: str, code: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        await create(client, charge(payment_method))

    error = raised.value
    assert (error.http_status, error.code) == (402, code)
    assert error.error is not None
    assert (error.error.type, error.error.code, error.error.decline_code) == (
        "card_error",
        code,
        decline_code,
    )
    assert error.error.message
    assert error.error.charge.startswith("ch_")
    assert error.error.payment_method.id == payment_method
    intent = error.error.payment_intent
    assert PI_ID.fullmatch(intent.id)
    assert intent.status == "requires_payment_method"
    assert intent.latest_charge == error.error.charge
    assert (intent.last_payment_error.code, intent.last_payment_error.decline_code) == (code, decline_code)
    assert intent.metadata.invoice_id == "inv_1"

    stored = await client.v1.payment_intents.retrieve_async(intent.id)
    assert (stored.status, stored.last_payment_error.code) == ("requires_payment_method", code)
    assert [pi["id"] for pi in fake.charges(invoice_id="inv_1", status="requires_payment_method")] == [
        intent.id
    ]
    failed = await client.v1.charges.retrieve_async(error.error.charge)
    assert (failed.status, failed.failure_code) == ("failed", code)


async def test_authentication_on_session_requires_action(client: stripe.StripeClient) -> None:
    params = charge("pm_card_authenticationRequired")
    del params["off_session"]

    intent = await create(client, params)

    assert intent.status == "requires_action"
    assert intent.next_action.type == "use_stripe_sdk"


@pytest.mark.parametrize(
    ("payment_method", "code"), [(None, "parameter_missing"), ("pm_card_nonexistent", "resource_missing")]
)
async def test_a_missing_or_unknown_payment_method_is_refused(
    fake: FakeStripe, client: stripe.StripeClient, payment_method: str | None, code: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await create(client, charge(payment_method))  # type: ignore[arg-type]

    assert (raised.value.http_status, raised.value.code, raised.value.param) == (400, code, "payment_method")
    assert fake.payment_intents == []


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        ({"amount": 10}, "amount_too_small", "amount"),
        ({"amount": "73.00"}, "parameter_invalid_integer", "amount"),
        ({"currency": "xyz"}, "parameter_invalid_string", "currency"),
        ({"offsession": True}, "parameter_unknown", "offsession"),
    ],
)
async def test_invalid_parameters_are_refused(
    fake: FakeStripe, client: stripe.StripeClient, extra: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await create(client, charge(**extra))

    assert (raised.value.code, raised.value.param) == (code, param)
    assert fake.payment_intents == []


async def test_currency_is_read_case_insensitively(client: stripe.StripeClient) -> None:
    intent = await create(client, charge(currency="USD"))

    assert intent.currency == "usd"


async def test_a_registered_payment_method_behaves_like_a_test_card(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.register_payment_method("pm_1SavedCard000000000000", like="pm_card_chargeDeclinedInsufficientFunds")

    with pytest.raises(stripe.CardError) as raised:
        await create(client, charge("pm_1SavedCard000000000000"))

    assert raised.value.error is not None
    assert raised.value.error.decline_code == "insufficient_funds"


async def test_retrieve_expands_the_latest_charge(client: stripe.StripeClient) -> None:
    intent = await create(client, charge())

    expanded = await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["latest_charge"]})

    assert expanded.latest_charge.id == intent.latest_charge
    assert expanded.latest_charge.status == "succeeded"


async def test_an_unknown_payment_intent_is_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.retrieve_async("pi_000000000000000000000000")

    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


# --- idempotency --------------------------------------------------------------------------------


async def test_the_same_key_and_parameters_replay_without_executing_again(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    first = await create(client, charge(), key="inv_1-attempt-1")
    second = await create(client, charge(), key="inv_1-attempt-1")

    assert second.id == first.id
    assert second.latest_charge == first.latest_charge
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert second.last_response.headers["Original-Request"] == first.last_response.headers["Request-Id"]
    assert len(fake.payment_intents) == 1
    assert [request.replayed for request in fake.requests] == [False, True]


async def test_a_decline_is_replayed_too(fake: FakeStripe, client: stripe.StripeClient) -> None:
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            await create(client, charge("pm_card_chargeDeclined"), key="k")
        errors.append(raised.value)

    assert errors[0].error is not None and errors[1].error is not None
    assert errors[1].error.payment_intent.id == errors[0].error.payment_intent.id
    assert errors[1].http_body == errors[0].http_body
    assert errors[1].headers["Idempotent-Replayed"] == "true"
    assert len(fake.payment_intents) == 1


async def test_the_same_key_with_other_parameters_is_an_idempotency_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    await create(client, charge(), key="k")

    with pytest.raises(stripe.IdempotencyError) as raised:
        await create(client, charge(amount=7400), key="k")

    assert raised.value.http_status == 400
    assert raised.value.error is not None
    assert raised.value.error.type == "idempotency_error"
    assert len(fake.payment_intents) == 1


async def test_the_same_key_on_another_endpoint_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    intent = await create(client, charge(), key="k")

    with pytest.raises(stripe.IdempotencyError):
        await client.v1.refunds.create_async({"payment_intent": intent.id}, options={"idempotency_key": "k"})


async def test_keys_and_objects_are_scoped_per_api_key(fake: FakeStripe, make_client: MakeClient) -> None:
    mine, theirs = make_client(), make_client(api_key=OTHER_KEY)

    first = await create(mine, charge(), key="k")
    second = await create(theirs, charge(), key="k")

    assert second.id != first.id
    assert "Idempotent-Replayed" not in second.last_response.headers
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await theirs.v1.payment_intents.retrieve_async(first.id)
    assert raised.value.code == "resource_missing"
    found = await theirs.v1.payment_intents.search_async({"query": "metadata['invoice_id']:'inv_1'"})
    assert [intent.id for intent in found.data] == [second.id]
    assert [pi["id"] for pi in fake.charges(invoice_id="inv_1", api_key=API_KEY)] == [first.id]


async def test_keys_are_forgotten_after_24_hours(
    fake: FakeStripe, client: stripe.StripeClient, clock: FrozenClock
) -> None:
    first = await create(client, charge(), key="k")
    clock.advance(timedelta(hours=23))
    assert (await create(client, charge(), key="k")).id == first.id

    clock.advance(timedelta(hours=2))
    later = await create(client, charge(), key="k")

    assert later.id != first.id
    assert len(fake.payment_intents) == 2


async def test_a_validation_error_is_not_saved(fake: FakeStripe, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        await create(client, charge("pm_card_nonexistent"), key="k")

    intent = await create(client, charge(), key="k")

    assert intent.status == "succeeded"
    assert "Idempotent-Replayed" not in intent.last_response.headers


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_short", "not-a-key"])
async def test_a_malformed_or_live_key_is_401(
    make_client: MakeClient, fake: FakeStripe, api_key: str
) -> None:
    with pytest.raises(stripe.AuthenticationError) as raised:
        await create(make_client(api_key=api_key), charge())

    assert raised.value.http_status == 401
    assert raised.value.error is not None
    assert raised.value.error.type == "invalid_request_error"
    assert raised.value.user_message.startswith("Invalid API Key provided: ")
    assert api_key not in raised.value.user_message
    assert fake.payment_intents == []


async def test_only_configured_keys_are_accepted(clock: FrozenClock) -> None:
    with FakeStripe(api_keys=[API_KEY], clock=clock) as fake:
        http_client = stripe.HTTPXClient(timeout=2.0)
        try:
            for api_key, accepted in [(API_KEY, True), (OTHER_KEY, False)]:
                client = stripe.StripeClient(
                    api_key, base_addresses={"api": fake.url}, http_client=http_client
                )
                if accepted:
                    assert (await create(client, charge())).status == "succeeded"
                else:
                    with pytest.raises(stripe.AuthenticationError):
                        await create(client, charge())
        finally:
            await http_client.close_async()


async def test_a_request_without_a_key_is_401(fake: FakeStripe) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        response = await http.get("/v1/customers/cus_x")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in response.json()["error"]["message"]


async def test_an_unknown_route_is_404(fake: FakeStripe) -> None:
    async with httpx.AsyncClient(base_url=fake.url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        response = await http.get("/v1/invoices")

    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/invoices)")


# --- faults -------------------------------------------------------------------------------------


async def test_a_500_before_execution_is_not_saved(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail(500, path="/v1/payment_intents")

    with pytest.raises(stripe.APIError) as raised:
        await create(client, charge(), key="k")
    assert raised.value.http_status == 500
    assert raised.value.error is not None
    assert raised.value.error.type == "api_error"
    assert fake.payment_intents == []

    intent = await create(client, charge(), key="k")
    assert intent.status == "succeeded"
    assert "Idempotent-Replayed" not in intent.last_response.headers


async def test_the_sdk_retries_a_500_before_execution(fake: FakeStripe, make_client: MakeClient) -> None:
    fake.fail(500, path="/v1/payment_intents")

    intent = await create(make_client(retries=1), charge())

    assert intent.status == "succeeded"
    assert [request.status for request in fake.requests] == [500, 200]
    assert fake.requests[0].idempotency_key == fake.requests[1].idempotency_key
    assert len(fake.payment_intents) == 1


async def test_a_500_after_execution_is_saved_and_replayed(fake: FakeStripe, make_client: MakeClient) -> None:
    fault = fake.fail(500, when="after", method="POST", path="/v1/payment_intents")
    client = make_client(retries=2)

    with pytest.raises(stripe.APIError) as first:
        await create(client, charge(), key="k")
    assert first.value.http_status == 500
    assert first.value.headers["Stripe-Should-Retry"] == "false"
    assert len(fake.requests) == 1, "the SDK does not retry when told not to"
    [intent] = fake.payment_intents
    assert intent["status"] == "succeeded"

    with pytest.raises(stripe.APIError) as replay:
        await create(client, charge(), key="k")
    assert replay.value.http_status == 500
    assert replay.value.headers["Idempotent-Replayed"] == "true"
    assert len(fake.payment_intents) == 1
    assert (fault.hits, fault.remaining) == (1, 0)


async def test_a_429_is_a_rate_limit_error(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.rate_limit(path="/v1/payment_intents")

    with pytest.raises(stripe.RateLimitError) as raised:
        await create(client, charge(), key="k")

    assert raised.value.http_status == 429
    assert raised.value.error is not None
    assert raised.value.error.code == "rate_limit"
    assert fake.payment_intents == []
    assert (await create(client, charge(), key="k")).status == "succeeded"


async def test_faults_apply_only_to_matching_requests_and_times(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    refund_fault = fake.fail(500, method="POST", path="/v1/refunds")
    search_fault = fake.fail(503, times=2, method="GET", path="/v1/payment_intents/*")

    intent = await create(client, charge())
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            await client.v1.payment_intents.retrieve_async(intent.id)
    retrieved = await client.v1.payment_intents.retrieve_async(intent.id)

    assert retrieved.id == intent.id
    assert (refund_fault.hits, search_fault.hits) == (0, 2)


async def test_a_hang_after_execution_times_out_with_the_charge_made_once(
    fake: FakeStripe, make_client: MakeClient
) -> None:
    fake.hang(1.0, when="after", path="/v1/payment_intents")

    with pytest.raises(stripe.APIConnectionError):
        await create(make_client(timeout=0.3), charge(), key="k")
    [made] = fake.payment_intents
    assert made["status"] == "succeeded"

    replay = await create(make_client(), charge(), key="k")
    assert replay.id == made["id"]
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(fake.payment_intents) == 1


async def test_the_sdk_retry_after_a_timeout_gets_the_saved_answer(
    fake: FakeStripe, make_client: MakeClient
) -> None:
    fake.hang(1.0, when="after", path="/v1/payment_intents")

    intent = await create(make_client(timeout=0.3, retries=1), charge())

    assert [pi["id"] for pi in fake.payment_intents] == [intent.id]
    assert [request.replayed for request in fake.requests] == [False, True]


async def test_a_hang_before_execution_executes_later(fake: FakeStripe, make_client: MakeClient) -> None:
    fake.hang(0.5, when="before", path="/v1/payment_intents")

    with pytest.raises(stripe.APIConnectionError):
        await create(make_client(timeout=0.2), charge(), key="k")
    assert fake.payment_intents == []

    await eventually(lambda: len(fake.payment_intents) == 1)


async def test_a_hang_before_execution_can_end_in_a_drop(fake: FakeStripe, make_client: MakeClient) -> None:
    fake.hang(0.3, when="before", then="drop", path="/v1/payment_intents")

    with pytest.raises(stripe.APIConnectionError):
        await create(make_client(timeout=2.0), charge(), key="k")

    assert fake.payment_intents == []
    assert fake.requests[0].status is None


async def test_a_concurrent_request_during_execution_gets_409(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.hang(0.5, when="during", path="/v1/payment_intents")
    first = asyncio.create_task(create(client, charge(), key="k"))
    await eventually(lambda: len(fake.requests) == 1)

    with pytest.raises(stripe.APIError) as raised:
        await create(client, charge(), key="k")

    assert raised.value.http_status == 409
    assert raised.value.error is not None
    assert raised.value.error.code == "idempotency_key_in_use"
    intent = await first
    assert [pi["id"] for pi in fake.payment_intents] == [intent.id]


async def test_a_drop_after_execution_is_retried_into_a_replay(
    fake: FakeStripe, make_client: MakeClient
) -> None:
    fake.drop(when="after", path="/v1/payment_intents")

    intent = await create(make_client(retries=1), charge())

    assert [pi["id"] for pi in fake.payment_intents] == [intent.id]
    assert [(request.status, request.replayed) for request in fake.requests] == [(None, False), (200, True)]


async def test_a_drop_without_retries_is_a_connection_error_after_the_charge(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.drop(when="after")

    with pytest.raises(stripe.APIConnectionError):
        await create(client, charge())

    assert fake.charges(invoice_id="inv_1", status="succeeded") != []


async def test_stop_returns_promptly_while_a_request_hangs(clock: FrozenClock) -> None:
    fake = FakeStripe(clock=clock).start()
    http_client = stripe.HTTPXClient(timeout=10.0)
    client = stripe.StripeClient(API_KEY, base_addresses={"api": fake.url}, http_client=http_client)
    try:
        fake.hang(30, when="during")
        hung = asyncio.create_task(create(client, charge()))
        await eventually(lambda: len(fake.requests) == 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.to_thread(fake.stop)

        assert loop.time() - started < 1.5
        with pytest.raises(stripe.APIConnectionError):
            await hung
        assert fake.payment_intents == []
    finally:
        fake.stop()
        await http_client.close_async()


# --- search -------------------------------------------------------------------------------------


async def test_search_finds_payment_intents_by_metadata(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    paid = await create(client, charge(invoice="inv_1"))
    with pytest.raises(stripe.CardError):
        await create(client, charge("pm_card_chargeDeclined", invoice="inv_1"))
    other = await create(client, charge(invoice="inv_2"))
    search = client.v1.payment_intents.search_async

    found = await search({"query": "metadata['invoice_id']:'inv_1'"})
    assert found.object == "search_result"
    assert found.has_more is False
    assert sorted(intent.status for intent in found.data) == ["requires_payment_method", "succeeded"]

    succeeded = await search({"query": "metadata['invoice_id']:'inv_1' AND status:'succeeded'"})
    assert [intent.id for intent in succeeded.data] == [paid.id]
    both = await search({"query": "metadata['invoice_id']:'inv_1' OR metadata['invoice_id']:'inv_2'"})
    assert len(both.data) == 3
    assert (await search({"query": "metadata['invoice_id']:'inv_3'"})).data == []

    fake.search_index_lag = 1
    lagging = await search({"query": "metadata['invoice_id']:'inv_2'"})
    assert lagging.data == [], f"{other.id} is not indexed yet"


async def test_search_pages(client: stripe.StripeClient) -> None:
    for _ in range(3):
        await create(client, charge())
    query = "metadata['invoice_id']:'inv_1'"

    first = await client.v1.payment_intents.search_async({"query": query, "limit": 2})
    rest = await client.v1.payment_intents.search_async({"query": query, "limit": 2, "page": first.next_page})

    assert (len(first.data), first.has_more) == (2, True)
    assert (len(rest.data), rest.has_more, rest.next_page) == (1, False, None)
    assert {intent.id for intent in first.data}.isdisjoint({intent.id for intent in rest.data})


@pytest.mark.parametrize(
    "query", ["metadata['invoice_id']", "status:'succeeded' AND amount>5 OR x:'y'", "foo:'x'"]
)
async def test_a_bad_search_query_is_refused(client: stripe.StripeClient, query: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.search_async({"query": query})

    assert raised.value.param == "query"


# --- refunds ------------------------------------------------------------------------------------


async def test_partial_then_full_refund(fake: FakeStripe, client: stripe.StripeClient) -> None:
    intent = await create(client, charge())

    partial = await client.v1.refunds.create_async(
        {"payment_intent": intent.id, "amount": 500, "metadata": {"invoice_id": "inv_1"}},
        options={"idempotency_key": "refund-1"},
    )
    rest = await client.v1.refunds.create_async({"payment_intent": intent.id})

    assert partial.id.startswith("re_")
    assert (partial.object, partial.status, partial.amount, partial.currency) == (
        "refund",
        "succeeded",
        500,
        "usd",
    )
    assert (partial.payment_intent, partial.charge) == (intent.id, intent.latest_charge)
    assert partial.metadata.to_dict() == {"invoice_id": "inv_1"}
    assert rest.amount == 6800
    assert (await client.v1.refunds.retrieve_async(partial.id)).amount == 500
    refunded = await client.v1.charges.retrieve_async(intent.latest_charge)
    assert (refunded.amount_refunded, refunded.refunded) == (7300, True)
    assert [refund["amount"] for refund in fake.refunds(payment_intent=intent.id)] == [500, 6800]
    assert len(fake.refunds(invoice_id="inv_1")) == 1

    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 1})
    assert again.value.code == "charge_already_refunded"


async def test_refunding_more_than_is_left_is_refused(fake: FakeStripe, client: stripe.StripeClient) -> None:
    intent = await create(client, charge())
    await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 7000})

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 301})

    assert (raised.value.http_status, raised.value.code, raised.value.param) == (
        400,
        "amount_too_large",
        "amount",
    )
    assert "($3.00)" in raised.value.user_message
    assert len(fake.refunds()) == 1


async def test_refunding_a_declined_or_unknown_payment_is_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as declined:
        await create(client, charge("pm_card_chargeDeclined"))
    assert declined.value.error is not None

    with pytest.raises(stripe.InvalidRequestError) as not_paid:
        await client.v1.refunds.create_async({"payment_intent": declined.value.error.payment_intent.id})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await client.v1.refunds.create_async({"payment_intent": "pi_000000000000000000000000"})

    assert not_paid.value.code == "payment_intent_unexpected_state"
    assert (unknown.value.code, unknown.value.param) == ("resource_missing", "payment_intent")


# --- customers ----------------------------------------------------------------------------------


async def test_customers_are_created_and_retrieved(client: stripe.StripeClient) -> None:
    created = await client.v1.customers.create_async(
        {"email": "billing@acme.test", "metadata": {"tenant_id": "t"}}
    )
    retrieved = await client.v1.customers.retrieve_async(created.id)

    assert re.fullmatch(r"cus_[A-Za-z0-9]{14}", created.id)
    assert (retrieved.email, retrieved.metadata.tenant_id) == ("billing@acme.test", "t")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.customers.retrieve_async("cus_00000000000000")
    assert raised.value.http_status == 404


async def test_strict_customers_must_exist(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.strict_customers = True
    customer = fake.add_customer(API_KEY, email="a@b.test")

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await create(client, charge())
    intent = await create(client, charge(customer=customer["id"]))

    assert (raised.value.code, raised.value.param) == ("resource_missing", "customer")
    assert intent.customer == customer["id"]


# --- plumbing -----------------------------------------------------------------------------------


def test_forms_parse_into_nested_dicts_and_lists() -> None:
    parsed = parse_form(
        "metadata[invoice_id]=inv_1&expand[0]=a&expand[1]=b&a[b][c]=d&x[]=1&x[]=2&empty=&sp=a+b"
    )

    assert parsed == {
        "metadata": {"invoice_id": "inv_1"},
        "expand": ["a", "b"],
        "a": {"b": {"c": "d"}},
        "x": ["1", "2"],
        "empty": "",
        "sp": "a b",
    }


@pytest.mark.parametrize("body", ["a=1&a[b]=2", "a[b]=1&a=2", "a=1&a=2", "[x]=1"])
def test_ambiguous_forms_are_refused(body: str) -> None:
    with pytest.raises(FormError):
        parse_form(body)


def test_a_subprocess_reaches_the_fake(fake: FakeStripe) -> None:
    script = (
        "import sys, urllib.request, urllib.error\n"
        "request = urllib.request.Request(sys.argv[1] + '/v1/customers/cus_x', "
        "headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
        "try:\n    urllib.request.urlopen(request, timeout=5)\n"
        "except urllib.error.HTTPError as error:\n    print(error.code)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, fake.url, API_KEY],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert result.stdout.strip() == "404"
    assert [(request.method, request.path) for request in fake.requests] == [("GET", "/v1/customers/cus_x")]


async def test_reset_forgets_everything(fake: FakeStripe, client: stripe.StripeClient) -> None:
    await create(client, charge(), key="k")
    fake.fail(500)

    fake.reset()

    assert (fake.payment_intents, fake.requests) == ([], [])
    intent = await create(client, charge(), key="k")
    assert "Idempotent-Replayed" not in intent.last_response.headers


async def test_a_bug_in_the_fake_is_a_500_and_is_kept(fake: FakeStripe, client: stripe.StripeClient) -> None:
    def broken(call: object) -> dict[str, Any]:
        raise KeyError("oops")

    fake._routes.insert(0, ("POST", re.compile("/v1/customers"), broken))

    for _ in range(2):  # the key is not left in progress
        with pytest.raises(stripe.APIError) as raised:
            await client.v1.customers.create_async({}, options={"idempotency_key": "k"})
        assert raised.value.http_status == 500

    assert len(fake.errors) == 2
    assert "KeyError: 'oops'" in fake.errors[0]
    fake.reset()


async def test_the_exported_fixture_serves_on_the_frozen_clock(
    fake_stripe: FakeStripe,  # noqa: F811 - the imported fixture
    clock: FrozenClock,
) -> None:
    http_client = stripe.HTTPXClient(timeout=2.0)
    client = stripe.StripeClient(API_KEY, base_addresses={"api": fake_stripe.url}, http_client=http_client)
    try:
        customer = await client.v1.customers.create_async({"name": "Acme"})
    finally:
        await http_client.close_async()

    assert customer.created == int(clock.now().timestamp())
    assert [c["id"] for c in fake_stripe.customers] == [customer.id]
