"""Charging under SIGKILL: ``billing serve`` on the Stripe provider, pointed at the fake Stripe
(``tests/fakes/stripe_server.py``, in this process), is killed while the billing run charges
many invoices, then restarted and run again later in business time until all is settled.

The fake answers each charge a little after making it, so kills also land between a charge and
the commit of its outcome: that payment stays pending, and reconciliation repeats the request
with the same idempotency key, which Stripe answers without charging again. In the end every
invoice is paid and the fake made exactly one successful charge per invoice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from billing.invoicing.models import Invoice
from tests.crash import scene
from tests.crash.harness import (
    RESTART_AFTER,
    ROUNDS,
    Api,
    Deployment,
    Server,
    billing_run,
    completed,
    kill_when,
    month_start,
)
from tests.fakes.stripe_server import FakeStripe

CUSTOMERS = 20
BASE_FEE = 1000
SECRET_KEY = "sk_test_" + "crashCrashCrash0123456789"
ANSWER_DELAY = 0.05  # between making a charge and answering it
SETTLE_RUNS = 3


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        server.hang(ANSWER_DELAY, when="after", times=10**6, method="POST", path="/v1/payment_intents")
        yield server
    assert server.errors == [], server.errors


def charge_requests(fake: FakeStripe) -> int:
    return sum(r.method == "POST" and r.path == "/v1/payment_intents" for r in fake.requests)


async def paid_count(deployment: Deployment) -> int:
    return int(await deployment.scalar(sa.select(sa.func.count()).where(Invoice.status == "paid")))


async def test_a_killed_charging_run_charges_each_invoice_once_and_settles_them_all(
    deployment: Deployment, api: Api, fake: FakeStripe, rng: random.Random
) -> None:
    p1, p2 = month_start(-1), month_start(0)
    await api.call("PATCH", "/v1/tenant", {"payment_provider": "stripe", "stripe_secret_key": SECRET_KEY})
    await scene.plan(api, "flat", base_fee=BASE_FEE)

    def card(external_id: str) -> dict[str, str]:
        return {"provider_customer_id": f"cus_{external_id}", "default_payment_method": "pm_card_visa"}

    await scene.subscribed_customers(api, CUSTOMERS, plan="flat", starts_at=p1, fields=card)
    env = {
        "BILLING_STRIPE_API_BASE": fake.url,
        "BILLING_STRIPE_TIMEOUT_SECONDS": "10",
        "BILLING_STRIPE_MAX_NETWORK_RETRIES": "0",
    }
    at = p2 + timedelta(hours=25)
    interrupted = 0
    # Each round later in business time: the claims of the charges a kill left pending have lapsed.
    for round_ in range(ROUNDS + SETTLE_RUNS):
        remaining = CUSTOMERS - await paid_count(deployment)  # each needs a charge or a repeat
        if round_ >= ROUNDS and remaining == 0:
            break
        server = await Server.start(deployment, f"serve-{round_}", **env)
        try:
            async with server.client() as client:
                run = asyncio.create_task(billing_run(client, at + round_ * RESTART_AFTER))
                if round_ < ROUNDS and remaining > 1:
                    target = charge_requests(fake) + rng.randint(1, remaining - 1)
                    print(f"round {round_}: kill at charge request {target}")
                    await kill_when(
                        server.proc,
                        lambda t=target, r=run: r.done() or charge_requests(fake) >= t,
                        rng,
                        jitter=ANSWER_DELAY,
                        poll=0.005,
                    )
                outcome = await run
                if isinstance(outcome, httpx.TransportError):
                    interrupted += 1
                else:
                    completed(outcome)
        finally:
            await server.proc.kill()
        succeeded = [i["metadata"]["invoice_id"] for i in fake.charges(status="succeeded")]
        assert len(succeeded) == len(set(succeeded)), f"round {round_}: an invoice was charged twice"
    replays = sum(r.replayed for r in fake.requests)
    print(f"{interrupted} runs interrupted; {replays} charge requests answered as idempotent replays")
    assert interrupted >= 1

    invoices = await api.every("/v1/invoices")
    assert len(invoices) == CUSTOMERS
    assert {(i["status"], i["amount_paid"]) for i in invoices} == {("paid", BASE_FEE)}
    for invoice in invoices:
        (intent,) = fake.charges(invoice_id=invoice["id"])
        assert (intent["status"], intent["amount"]) == ("succeeded", BASE_FEE)
        (payment,) = invoice["payments"]
        assert (payment["status"], payment["provider_payment_id"]) == ("succeeded", intent["id"])
    assert len(fake.payment_intents) == CUSTOMERS
