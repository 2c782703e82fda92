"""Email benchmark: notifications rendered, queued and delivered per second to a local SMTP sink.

    .venv/bin/python bench/emails.py --database sqlite --emails 10000
    .venv/bin/python bench/emails.py --database postgresql --emails 10000   # BILLING_BENCH_POSTGRES_URL

On a fresh database: a tenant, 1000 customers with an open invoice each. Starts an SMTP sink
(aiosmtpd, in its own process, counting what it accepts), then, in the service's own code:
1. queues N notifications (render + insert, 10 per transaction, the six customer kinds in
   turn, five locales), then delivers them with ``dispatch_notifications``: each phase timed;
2. queues N more while a dispatcher loop delivers in the same process, as dunning and the
   dispatcher tick do in one ``billing serve``: emails rendered, queued and delivered per
   second (the target is 500/s);
3. queues N more while a process of its own delivers them, as a ``billing worker`` does beside
   the API replicas (the deployment of README's "Scaling out"; on SQLite the two processes
   share the database file's one writer).
The baseline, measured in the same run against the same sink: the same emails, already built,
sent with aiosmtplib over as many connections as the dispatcher uses, with no database. Prints
the rates and the delivery ratio to the baseline; checks that the sink got every email once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import sqlalchemy as sa

SCRIPT = str(Path(__file__).resolve())
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import bench_database, drop_postgres_database, free_port  # noqa: E402
from billing.core.clock import FrozenClock  # noqa: E402
from billing.core.context import AppContext  # noqa: E402
from billing.core.ids import new_id  # noqa: E402
from billing.core.migrate import upgrade_async  # noqa: E402
from billing.core.settings import Settings  # noqa: E402
from billing.customers import service as customers  # noqa: E402
from billing.customers.schemas import CustomerCreate  # noqa: E402
from billing.invoicing import plans, subscriptions  # noqa: E402
from billing.invoicing.models import Invoice  # noqa: E402
from billing.invoicing.schemas import PlanCreate, SubscriptionCreate  # noqa: E402
from billing.notifications import dispatch  # noqa: E402
from billing.notifications.delivery import Email, build_email  # noqa: E402
from billing.notifications.models import Notification  # noqa: E402
from billing.notifications.queue import KINDS, queue_notification  # noqa: E402
from billing.tenants import service  # noqa: E402
from billing.tenants.models import Tenant  # noqa: E402

CUSTOMERS = 1000
PER_TRANSACTION = 10
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
LOCALES = ["en", "de", "fr", "ja", "pt-BR"]


# --- The sink, in its own process ---------------------------------------------------------


class CountingSink:
    def __init__(self) -> None:
        self.count = 0
        self.ids: set[bytes] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        for line in envelope.content.split(b"\r\n", 40):
            if line.lower().startswith(b"message-id:"):
                self.ids.add(line)
        return "250 OK"


def run_sink(port: int) -> None:
    """Accept mail until stdin closes, then print how many emails and distinct Message-IDs."""
    from aiosmtpd.controller import Controller

    handler = CountingSink()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()
    print(f"{handler.count} {len(handler.ids)}", flush=True)


class Sink:
    """The sink process: ``start`` it, ``stop`` it to learn what it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, SCRIPT, "sink", "--port", str(self.port), stdin=PIPE, stdout=PIPE
        )
        assert self.process.stdout is not None
        assert (await self.process.stdout.readline()).strip() == b"ready"

    async def stop(self) -> tuple[int, int]:
        """Stop the sink; return (emails accepted, distinct Message-IDs)."""
        process, self.process = self.process, None
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.close()
        received, distinct = (await process.stdout.readline()).split()
        await process.wait()
        return int(received), int(distinct)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


# --- Set-up -------------------------------------------------------------------------------


async def load(ctx: AppContext) -> tuple[str, list[tuple[str, str]]]:
    """A branded tenant and CUSTOMERS customers with an open invoice each: (tenant, [(customer, invoice)])."""
    async with ctx.database.transaction() as session:
        tenant = await service.create_tenant(session, name="Bench & Co", currency="USD", now=NOW)
        await session.execute(
            sa.update(Tenant)
            .where(Tenant.id == tenant.id)
            .values(
                support_email="billing@bench.example",
                email_from="Bench Billing <no-reply@bench.example>",
                update_payment_method_url="https://bench.example/billing/card",
            )
        )
        await plans.create_plan(
            session, tenant.id, PlanCreate("bench", currency="USD", base_fee=4900), now=NOW
        )
    pairs = []
    for start in range(0, CUSTOMERS, 250):
        async with ctx.database.transaction() as session:
            for n in range(start, min(start + 250, CUSTOMERS)):
                pairs.append(await _customer_with_invoice(session, tenant.id, n))
    return tenant.id, pairs


async def _customer_with_invoice(session: Any, tenant_id: str, n: int) -> tuple[str, str]:
    data = CustomerCreate(
        f"customer-{n:04d}",
        email=f"billing+{n}@customer{n % 97}.example",
        name=f"Customer <{n}> & Sons",
        currency="USD",
        locale=LOCALES[n % len(LOCALES)],
        timezone="Europe/Berlin",
    )
    customer = await customers.create_customer(session, tenant_id, data, now=NOW)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    sub = await subscriptions.create_subscription(
        session, tenant_id, SubscriptionCreate(customer.id, "bench", start), now=NOW
    )
    amount = 4900 + 37 * n
    invoice = Invoice(
        id=new_id("inv"),
        tenant_id=tenant_id,
        customer_id=customer.id,
        subscription_id=sub.id,
        number=f"BENCH-{n + 1:06d}",
        status="open",
        currency="USD",
        period_start=start,
        period_end=datetime(2026, 11, 1, tzinfo=UTC),
        subtotal=amount,
        total=amount,
        amount_due=amount,
        amount_paid=0,
        grace_ends_at=datetime(2026, 11, 2, tzinfo=UTC),
        computed_at=NOW,
        created_at=NOW,
        updated_at=NOW,
        finalized_at=NOW,
        due_at=NOW,
    )
    session.add(invoice)
    await session.flush()
    return customer.id, invoice.id


def notification(n: int, pairs: list[tuple[str, str]]) -> tuple[str, str, str, dict[str, Any]]:
    """Notification number ``n``: (customer, kind, dedupe key, data), every kind in turn."""
    customer_id, invoice_id = pairs[n % len(pairs)]
    kind = KINDS[n % len(KINDS)]
    card = {
        "id": f"card_{n}",
        "brand": "visa",
        "last4": f"{n % 10_000:04d}",
        "exp_month": 12,
        "exp_year": 2026,
    }
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "attempt": n // len(pairs) + 1,
        "next_attempt_at": NOW + timedelta(days=3),
        "failure_class": "soft",
        "decline_code": "insufficient_funds",
        "final_action": "mark_uncollectible",
        "final_attempt_at": NOW + timedelta(days=5),
        "card": card,
        "subscription": {"id": f"sub_{n}", "plan_code": "pro", "trial_end": NOW + timedelta(days=3)},
        "plan_name": "Pro",
    }
    return customer_id, kind, f"{kind}:bench:{n}", data


# --- Phases -------------------------------------------------------------------------------


async def queue_all(ctx: AppContext, tenant_id: str, pairs: list[tuple[str, str]], numbers: range) -> float:
    started = time.perf_counter()
    for first in range(numbers.start, numbers.stop, PER_TRANSACTION):
        async with ctx.database.transaction() as session:
            for n in range(first, min(first + PER_TRANSACTION, numbers.stop)):
                customer_id, kind, key, data = notification(n, pairs)
                await queue_notification(
                    session,
                    tenant_id=tenant_id,
                    customer_id=customer_id,
                    kind=kind,
                    dedupe_key=key,
                    data=data,
                    at=NOW,
                )
    return time.perf_counter() - started


async def dispatch_or_pause(ctx: AppContext) -> int:
    """One dispatch, as a tick runs it, and a short pause when nothing was due: how many were sent."""
    delivered = await dispatch.dispatch_notifications(ctx)
    if not delivered:
        await asyncio.sleep(0.005)
    return delivered


async def pipelined(
    ctx: AppContext, tenant_id: str, pairs: list[tuple[str, str]], numbers: range
) -> tuple[float, int]:
    """Queue and deliver at the same time, as dunning and the dispatcher tick do: (seconds, sent)."""
    started = time.perf_counter()
    producer = asyncio.create_task(queue_all(ctx, tenant_id, pairs, numbers))
    sent = 0
    while not producer.done():
        sent += await dispatch_or_pause(ctx)
    await producer
    sent += await dispatch.dispatch_notifications(ctx)
    return time.perf_counter() - started, sent


def run_dispatcher(url: str, data_dir: str, smtp_port: int, count: int) -> None:
    """The worker's side: deliver what the bench queues, as ``billing worker`` does, until
    ``count`` are sent; print ``ready`` once started and the number sent at the end."""
    settings = bench_settings(Path(data_dir), url, smtp_port)

    async def deliver() -> None:
        ctx = AppContext.create(settings, clock=FrozenClock(NOW))
        await ctx.database.ping()
        print("ready", flush=True)
        sent = 0
        while sent < count:
            sent += await dispatch_or_pause(ctx)
        await ctx.close()
        print(sent, flush=True)

    asyncio.run(deliver())


async def with_worker(
    ctx: AppContext, tenant_id: str, pairs: list[tuple[str, str]], numbers: range, smtp_port: int
) -> tuple[float, int]:
    """Queue here while a process of its own delivers, as with ``billing worker``: (seconds, sent)."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "dispatcher",
        ctx.settings.database_url,
        str(ctx.settings.data_dir),
        str(smtp_port),
        str(len(numbers)),
        stdout=PIPE,
    )
    assert worker.stdout is not None
    assert (await worker.stdout.readline()).strip() == b"ready"
    started = time.perf_counter()
    await queue_all(ctx, tenant_id, pairs, numbers)
    sent = int(await worker.stdout.readline())
    elapsed = time.perf_counter() - started
    await worker.wait()
    return elapsed, sent


async def statuses(ctx: AppContext) -> dict[str, int]:
    async with ctx.database.read() as session:
        rows = await session.execute(
            sa.select(Notification.status, sa.func.count()).group_by(Notification.status)
        )
        return {status: count for status, count in rows.all()}


async def raw_smtp_baseline(ctx: AppContext, port: int, count: int) -> float:
    """The same emails, built beforehand, sent over ``dispatch.LANES`` connections: no database."""
    async with ctx.database.read() as session:
        rows = (await session.execute(sa.select(Notification).limit(count))).scalars().all()
    messages = [build_email(row) for row in rows]

    async def lane(share: list[Email]) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        for email in share:
            await client.sendmail(email.sender, [email.recipient], email.data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*[lane(messages[k :: dispatch.LANES]) for k in range(dispatch.LANES)])
    return len(messages) / (time.perf_counter() - started)


def bench_settings(data_dir: Path, url: str, smtp_port: int) -> Settings:
    return Settings(
        env="test",
        data_dir=data_dir,
        database_url=url,
        secret_keys=("bench-secret-key-0123456789abcdefghijklmnop",),
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        scheduler=False,
        log_level="WARNING",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--emails", type=int, default=10_000)
    args = parser.parse_args()

    data_dir, url = await bench_database(args.database)
    sink = Sink()
    await sink.start()
    ctx = AppContext.create(bench_settings(data_dir, url, sink.port), clock=FrozenClock(NOW))
    try:
        await upgrade_async(url)
        tenant_id, pairs = await load(ctx)
        queue_seconds = await queue_all(ctx, tenant_id, pairs, range(args.emails))
        started = time.perf_counter()
        sent = await dispatch.dispatch_notifications(ctx)
        deliver_seconds = time.perf_counter() - started
        pipeline_seconds, pipeline_sent = await pipelined(
            ctx, tenant_id, pairs, range(args.emails, 2 * args.emails)
        )
        worker_seconds, worker_sent = await with_worker(
            ctx, tenant_id, pairs, range(2 * args.emails, 3 * args.emails), sink.port
        )
        counts = await statuses(ctx)
        received, distinct = await sink.stop()
        await sink.start()
        baseline = await raw_smtp_baseline(ctx, sink.port, min(args.emails, 5000))
        await sink.stop()
    finally:
        await ctx.close()
        sink.kill()
        if args.database == "postgresql":
            await drop_postgres_database(url)

    total = queue_seconds + deliver_seconds
    delivery = sent / deliver_seconds
    print(f"database:          {args.database}")
    print(f"emails:            {args.emails} per phase, {len(KINDS)} kinds, {CUSTOMERS} customers, 5 locales")
    print(f"render + queue:    {args.emails / queue_seconds:,.0f}/s ({queue_seconds:.2f} s)")
    print(f"deliver (SMTP):    {delivery:,.0f}/s ({deliver_seconds:.2f} s, {dispatch.LANES} connections)")
    print(f"one after other:   {args.emails / total:,.0f} emails/s rendered, queued and delivered")
    print(
        f"at the same time:  {pipeline_sent / pipeline_seconds:,.0f} emails/s rendered, queued and delivered"
        " (target 500/s)"
    )
    print(
        f"with a worker:     {worker_sent / worker_seconds:,.0f} emails/s rendered and queued here,"
        " delivered by a process of its own"
    )
    print(f"sink:              {received} received, {distinct} distinct Message-IDs; rows {counts}")
    print(f"raw SMTP baseline: {baseline:,.0f}/s (same emails prebuilt, no database)")
    print(f"ratio:             {delivery / baseline:.2f} of the raw SMTP baseline (delivery)")
    if not received == distinct == sent + pipeline_sent + worker_sent == 3 * args.emails:
        raise SystemExit("some email was lost or sent twice")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        run_sink(int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "dispatcher":
        run_dispatcher(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        os.environ.setdefault("BILLING_LOG_LEVEL", "warning")
        asyncio.run(main())
