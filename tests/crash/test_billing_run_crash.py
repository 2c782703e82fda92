"""The billing run under SIGKILL: ``billing serve`` is killed while ``POST /v1/billing/run``
closes two ended months of many subscriptions, finalizes and charges their invoices (sandbox
provider); restarted, the run is posted again, ten minutes later in business time, until it
answers.

After every kill: the numbers given so far are gapless and no invoice has two successful charges.
In the end: exactly one invoice per (subscription, period), all finalized, numbered ACME-000001
onwards with no hole or repeat, each for its base fee and its own events, and each charged once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from billing.invoicing.models import Invoice
from billing.metering.usage_models import UsageEvent
from billing.payments.models import Payment
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
    stamp,
)

CUSTOMERS = 16
BASE_FEE = 1000
EVENTS_PER_PERIOD = 2
# Units that show progress: drafts created (all in one transaction), numbers given, charges done.
STEPS = 3 * 2 * CUSTOMERS


def payment_method(external_id: str) -> dict[str, Any]:
    declined = int(external_id[1:]) % 5 == 0
    return {"default_payment_method": "pm_card_chargeDeclined" if declined else "pm_card_visa"}


async def post_usage(
    api: Api, rng: random.Random, periods: list[tuple[datetime, datetime]]
) -> dict[tuple[str, str], int]:
    """A few events per customer and period; the expected total of each (customer, period start)."""
    events, expected = [], {}
    for n in range(CUSTOMERS):
        customer = f"c{n:03d}"
        for start, end in periods:
            values = [rng.randint(1, 500) for _ in range(EVENTS_PER_PERIOD)]
            for i, value in enumerate(values):
                at = start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))
                event = {"id": f"evt-{n}-{start:%m}-{i}", "customer": customer, "meter": "api_calls"}
                events.append(event | {"timestamp": stamp(at), "value": value})
            expected[(customer, stamp(start))] = BASE_FEE + sum(values)  # 0.01 USD a unit: a cent each
    answer = await api.call("POST", "/v1/events/batch", {"events": events})
    assert answer["accepted"] == len(events), answer
    return expected


async def progress(deployment: Deployment) -> int:
    created = await deployment.scalar(sa.select(sa.func.count()).select_from(Invoice))
    numbered = await deployment.scalar(sa.select(sa.func.count(Invoice.number)))
    charged = await deployment.scalar(sa.select(sa.func.count()).where(Payment.status != "pending"))
    return int(created + numbered + charged)


async def check_consistent(deployment: Deployment, prefix: str) -> None:
    """What must hold at any instant, even right after a kill."""
    numbers = sorted(
        n for (n,) in await deployment.rows(sa.select(Invoice.number).where(Invoice.number.is_not(None)))
    )
    assert numbers == [f"{prefix}-{i:06d}" for i in range(1, len(numbers) + 1)], numbers
    paid = Counter(
        i
        for (i,) in await deployment.rows(sa.select(Payment.invoice_id).where(Payment.status == "succeeded"))
    )
    assert not [i for i, count in paid.items() if count > 1], paid


def kill_condition(
    rng: random.Random, deployment: Deployment, done: int, run: asyncio.Task[Any]
) -> Condition:
    """Either a number of steps to reach (anywhere from just after the drafts to the last charge),
    or a delay after the run was posted (mostly inside the transaction that creates the drafts)."""
    if rng.random() < 0.25 or done >= STEPS - 1:
        delay = rng.uniform(0, 0.3)
        print(f"kill {delay:.3f} s after the run was posted")
        deadline = time.monotonic() + delay
        return lambda: run.done() or time.monotonic() >= deadline
    target = rng.randint(done + 1, STEPS - 1)
    print(f"kill at step {target} of {STEPS}")

    async def reached() -> bool:
        return run.done() or await progress(deployment) >= target

    return reached


async def test_a_killed_billing_run_leaves_one_invoice_per_period_and_a_gapless_numbering(
    deployment: Deployment, api: Api, rng: random.Random
) -> None:
    p0, p1, p2 = month_start(-2), month_start(-1), month_start(0)
    await scene.meter(api, "api_calls")
    prices = [{"meter": "api_calls", "model": "per_unit", "unit_amount": "0.01"}]
    await scene.plan(api, "pro", base_fee=BASE_FEE, prices=prices)
    await scene.subscribed_customers(api, CUSTOMERS, plan="pro", starts_at=p0, fields=payment_method)
    expected = await post_usage(api, rng, [(p0, p1), (p1, p2)])
    prefix = (await api.call("GET", "/v1/tenant"))["invoice_prefix"]
    at = p2 + timedelta(hours=25)  # both months ended and their grace periods passed
    interrupted = 0
    # Each round later in business time: the charges a kill left pending are settled by the next.
    for round_ in range(ROUNDS + 1):
        done = await progress(deployment)
        server = await Server.start(deployment, f"serve-{round_}")
        try:
            async with server.client() as client:
                run = asyncio.create_task(billing_run(client, at + round_ * RESTART_AFTER))
                if round_ == ROUNDS:
                    completed(await run)
                    continue
                await kill_when(server.proc, kill_condition(rng, deployment, done, run), rng, poll=0.01)
                interrupted += isinstance(await run, httpx.TransportError)
            await check_consistent(deployment, prefix)
        finally:
            await server.proc.kill()
    print(f"{interrupted} of {ROUNDS} kills interrupted the run")
    assert interrupted >= 1

    await check_consistent(deployment, prefix)
    invoices = await api.every("/v1/invoices")
    assert sorted((i["customer_external_id"], i["period_start"]) for i in invoices) == sorted(expected)
    assert {(i["customer_external_id"], i["period_start"]): i["total"] for i in invoices} == expected
    assert sorted(i["number"] for i in invoices) == [f"{prefix}-{n:06d}" for n in range(1, 2 * CUSTOMERS + 1)]
    for invoice in invoices:
        declined = payment_method(invoice["customer_external_id"])["default_payment_method"] != "pm_card_visa"
        outcome = ("open", ["failed"]) if declined else ("paid", ["succeeded"])
        assert (invoice["status"], [p["status"] for p in invoice["payments"]]) == outcome, invoice
    unbilled = await deployment.scalar(sa.select(sa.func.count()).where(UsageEvent.invoice_id.is_(None)))
    assert unbilled == 0
