"""Credits under SIGKILL: every customer has a grant covering part of its invoice; ``billing
serve`` (Stripe provider, the fake Stripe) is killed while the billing run finalizes and charges,
then restarted and run again later in business time until all is settled.

Credits are applied inside the finalization transaction, and the charge is made later from
``amount_due``: a kill between them can neither apply a grant twice nor charge what credits
covered. In the end each invoice has exactly one set of ``applied`` entries, and the one
successful charge of each is its total less its credits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from billing.core.clock import SystemClock
from billing.credits.models import CreditLedgerEntry
from billing.invoicing.models import Invoice
from tests.crash import scene
from tests.crash.harness import (
    RESTART_AFTER,
    ROUNDS,
    Api,
    Condition,
    Deployment,
    Server,
    billing_run,
    completed,
    kill_when,
    month_start,
)
from tests.fakes.stripe_server import FakeStripe

CUSTOMERS = 12
BASE_FEE = 1000
CREDIT = 350
SECRET_KEY = "sk_test_" + "crashCrashCrash0123456789"
ANSWER_DELAY = 0.05
SETTLE_RUNS = 3


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        server.hang(ANSWER_DELAY, when="after", times=10**6, method="POST", path="/v1/payment_intents")
        yield server
    assert server.errors == [], server.errors


def charge_requests(fake: FakeStripe) -> int:
    return sum(r.method == "POST" and r.path == "/v1/payment_intents" for r in fake.requests)


async def applied_per_invoice(deployment: Deployment) -> Counter[str]:
    query = sa.select(CreditLedgerEntry.invoice_id).where(CreditLedgerEntry.type == "applied")
    return Counter(invoice_id for (invoice_id,) in await deployment.rows(query))


async def paid_count(deployment: Deployment) -> int:
    return int(await deployment.scalar(sa.select(sa.func.count()).where(Invoice.status == "paid")))


def kill_condition(
    rng: random.Random, fake: FakeStripe, remaining: int, run: asyncio.Task[object]
) -> Condition:
    """A delay after the run was posted (mostly inside finalization), or a charge request to reach."""
    if rng.random() < 0.4 or remaining <= 1:
        deadline = time.monotonic() + rng.uniform(0, 0.4)
        return lambda: run.done() or time.monotonic() >= deadline
    target = charge_requests(fake) + rng.randint(1, remaining - 1)
    return lambda: run.done() or charge_requests(fake) >= target


async def test_a_killed_run_applies_credits_once_and_charges_only_what_they_left(
    deployment: Deployment, api: Api, fake: FakeStripe, rng: random.Random
) -> None:
    p1, p2 = month_start(-1), month_start(0)
    await api.call("PATCH", "/v1/tenant", {"payment_provider": "stripe", "stripe_secret_key": SECRET_KEY})
    await scene.plan(api, "flat", base_fee=BASE_FEE)

    def card(external_id: str) -> dict[str, str]:
        return {"provider_customer_id": f"cus_{external_id}", "default_payment_method": "pm_card_visa"}

    customers = await scene.subscribed_customers(api, CUSTOMERS, plan="flat", starts_at=p1, fields=card)
    for external_id in customers:
        grant = {"name": "Prepaid", "category": "promotional", "amount": CREDIT}
        await api.create(f"/v1/customers/{external_id}/credit-grants", grant)
    env = {
        "BILLING_STRIPE_API_BASE": fake.url,
        "BILLING_STRIPE_TIMEOUT_SECONDS": "10",
        "BILLING_STRIPE_MAX_NETWORK_RETRIES": "0",
    }
    # After the grants took effect (now), and after the month's grace period.
    at = max(p2 + timedelta(hours=25), SystemClock().now() + timedelta(minutes=1))
    interrupted = 0
    for round_ in range(ROUNDS + SETTLE_RUNS):
        remaining = CUSTOMERS - await paid_count(deployment)
        if round_ >= ROUNDS and remaining == 0:
            break
        server = await Server.start(deployment, f"serve-{round_}", **env)
        try:
            async with server.client() as client:
                run = asyncio.create_task(billing_run(client, at + round_ * RESTART_AFTER))
                if round_ < ROUNDS:
                    await kill_when(
                        server.proc,
                        kill_condition(rng, fake, remaining, run),
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
        applied = await applied_per_invoice(deployment)
        assert not [i for i, count in applied.items() if count > 1], f"round {round_}: credits applied twice"
        succeeded = [i["metadata"]["invoice_id"] for i in fake.charges(status="succeeded")]
        assert len(succeeded) == len(set(succeeded)), f"round {round_}: an invoice was charged twice"
    print(f"{interrupted} runs interrupted")
    assert interrupted >= 1

    invoices = await api.every("/v1/invoices")
    assert len(invoices) == CUSTOMERS
    applied = await applied_per_invoice(deployment)
    assert applied == Counter({invoice["id"]: 1 for invoice in invoices})
    for invoice in invoices:
        assert (invoice["total"], invoice["credits_applied"]) == (BASE_FEE, CREDIT)
        assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == (
            "paid",
            BASE_FEE - CREDIT,
            0,
        )
        (intent,) = fake.charges(invoice_id=invoice["id"])
        assert (intent["status"], intent["amount"]) == ("succeeded", BASE_FEE - CREDIT)
    for grant in await api.every("/v1/credit-grants"):
        assert (grant["status"], grant["available"]) == ("depleted", 0)
    for external_id in customers:
        entries = await api.every(f"/v1/customers/{external_id}/credit-ledger")
        assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
            ("applied", -CREDIT, 0),
            ("granted", CREDIT, CREDIT),
        ]
