"""Billing-run benchmark: close one month of hourly usage into drafts, against a bare aggregate.

N customers, subscribed since the start of October (UTC) to a plan with a base fee and 2 meters,
have one hourly reading per hour of October on each meter. Then ``POST /v1/billing/run`` with
``at`` an hour after October's end is timed until it answers (and until every draft exists).
The baseline, measured in the same run on the same rows, is one bare SQL aggregate: the sum,
count and max per (customer, meter) over the month's hourly rollups.

How the month gets there (``--load``):

- ``api`` (default): as users post it. Meters, the plan, customers and subscriptions are created
  through the API; the readings are posted to ``POST /v1/events/batch`` hour by hour (batches of
  1000, from 8 keep-alive connections, with bench/ingest.py's poster). The last hour's readings
  are posted after the others, just before the run, as late hourly meters arrive. Loading is
  not timed. (The server runs on the real clock, so every reading of October is already past
  its period's end when posted and flags its subscription for late usage, as the last hour's
  readings alone would: the run has the same work either way, one recompute per subscription.
  A batch answered with a 5xx is resent, and counted.)
- ``direct``: the rollups inserted straight into the tables, with no events (what this
  benchmark did before; the run has less to do: no late usage, rollups in customer order).

``--changed-share 0.1`` compares two runs of the same load, on fresh databases, alternating
(``--turns`` pairs): one as above, and one where that share of the customers, spread evenly,
changed plan in the middle of October (``PATCH /v1/subscriptions/{id}`` to a second plan with
``when`` = October 16, after the month's readings but the last hour were posted, untimed). Such
a change closes the old plan's half month at once into a draft, which a billing run at
``SETTLE_AT`` finalizes and charges (as the scheduler would in October; both runs have it,
untimed). The timed run then closes the new subscriptions' half months with everyone else's
month. The second plan, and a card on every customer, exist in both runs.
It prints each run and the ratio of the changed run to the unchanged one, per turn.

``--adjusted-share 0.5`` compares, the same way, runs where that share of the customers (spread
evenly) have what sits between rating and charging, set through the API before the last hour is
posted (untimed): a 19% exclusive tax rate on the customer, a 20% coupon for three months, and a
promotional credit grant that covers part of the invoice (drafts preview the credits). The
server runs on the real clock, so the discounts and grants are then moved in the database to
the start of October, as if made at signup. Both runs have a billing run at ``SETTLE_AT``
before the last hour, which dispatches what the set-up queued.

    .venv/bin/python -m bench.billing_run --database postgresql                  # api, 300 customers
    .venv/bin/python -m bench.billing_run --database postgresql --load direct    # direct, 300 customers
    .venv/bin/python -m bench.billing_run --database sqlite --customers 600
    .venv/bin/python -m bench.billing_run --database postgresql --customers 1000 --changed-share 0.1
    .venv/bin/python -m bench.billing_run --database postgresql --customers 1000 --adjusted-share 0.5
    .venv/bin/python -m bench.billing_run --database postgresql --customers 1000 --grouped

``--grouped`` compares, the same way, runs where the meters group their events by ``region`` (the
readings carry it; each customer has one region) and API calls are priced per region: one price
filtered to ``eu-west-1`` and one grouped by region for the rest, so that every customer's calls
are read per group and rated on a line of their region. The events and rollup rows are the same
in both runs; what differs is the grouped read and the dimensional rating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import billing.models  # noqa: F401  (every table, for foreign keys)
from bench.ingest import (
    BATCH,
    REGIONS,
    Server,
    backends,
    bench_database,
    drop_postgres_database,
    free_port,
    post_batches,
    process_cpu,
    server_env,
    setup,
)
from billing.core.db.engine import Database
from billing.core.ids import new_id
from billing.credits.models import CreditGrant
from billing.customers.models import Customer
from billing.invoicing.coupon_models import Discount as DiscountRow
from billing.invoicing.models import Invoice, Plan, Subscription
from billing.metering.models import Meter
from billing.metering.usage_models import UsageEvent, UsageRollup

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = int((MONTH_END - MONTH_START) / timedelta(hours=1))
# The run comes an hour after the month's end, once the last hour's readings have arrived (before
# the 24 hours of grace end: drafts are created, not finalized).
RUN_AT = MONTH_END + timedelta(hours=1)
METERS = ("api_calls", "storage_gb_hours")
PRICES: list[dict[str, Any]] = [
    {"meter": METERS[0], "model": "per_unit", "unit_amount": "0.0002"},
    {
        "meter": METERS[1],
        "model": "graduated",
        "tiers": [
            {"up_to": "1000", "unit_amount": "0", "flat_amount": 0},
            {"up_to": None, "unit_amount": "0.0015", "flat_amount": 0},
        ],
    },
]
PLAN: dict[str, Any] = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": 4900, "prices": PRICES}
GROUPED_PRICES: list[dict[str, Any]] = [
    {"meter": METERS[0], "model": "per_unit", "unit_amount": "0.0003", "filters": {"region": [REGIONS[0]]}},
    {"meter": METERS[0], "model": "per_unit", "unit_amount": "0.0002", "group_by": ["region"]},
    PRICES[1],
]
# Where the changing customers go, and when (backdated: the server runs on the real clock).
OTHER_PLAN: dict[str, Any] = {**PLAN, "code": "pro-plus", "name": "Pro Plus", "base_fee": 9900}
CHANGE_AT = MONTH_START + timedelta(days=15)
# The scheduler's run the morning after the changes' grace period (24 h): it finalizes their
# closing drafts, as it would in October. Both runs of a comparison have it.
SETTLE_AT = CHANGE_AT + timedelta(hours=30)
CHUNK = 2000
# A few minutes on a 2-core machine, loading included (posting a month of 300 customers' readings
# takes 1 to 2 minutes; 10,000 customers take 5 minutes even inserted directly).
DEFAULT_CUSTOMERS = 300


def reading(customer: int, meter: str, hour: int) -> dict[str, Any]:
    """Customer number ``customer``'s reading of ``meter`` for hour number ``hour`` of the month."""
    at = MONTH_START + timedelta(hours=hour)
    value = (
        str(100 + (customer * 31 + hour * 17) % 900)
        if meter == METERS[0]
        else f"{(customer * 13 + hour) % 97}.{hour % 10}"
    )
    return {
        "id": f"{meter}-{customer:05d}-{at:%Y%m%dT%H}",
        "customer": f"customer-{customer:04d}",
        "meter": meter,
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "value": value,
        "properties": {"region": REGIONS[customer % len(REGIONS)]},
    }


async def post_hours(
    port: int, key: str, customers: int, hours: range, connections: int, failed: list[bytes]
) -> int:
    """Post every customer's readings of ``hours`` to ``POST /v1/events/batch``, in the order of the
    hours, a day at a time (batches of ``BATCH``, taken from one queue by ``connections``
    keep-alive connections); the number of events the server answered for. A batch answered
    with a 5xx is resent, and the answer appended to ``failed``."""
    posted: list[int] = []
    for first in range(hours.start, hours.stop, 24):
        events = [
            reading(customer, meter, hour)
            for hour in range(first, min(first + 24, hours.stop))
            for customer in range(customers)
            for meter in METERS
        ]
        queue = [json.dumps({"events": events[n : n + BATCH]}).encode() for n in range(0, len(events), BATCH)]
        queue.reverse()  # post_batches pops from the end
        await asyncio.gather(
            *[post_batches(port, key, queue, posted, failed=failed) for _ in range(connections)]
        )
    return sum(posted)


async def load_api(
    server: Server,
    url: str,
    key: str,
    customers: int,
    connections: int,
    failed: list[bytes],
    *,
    grouped: bool = False,
) -> None:
    """Through the API, as users do it: meters, the plan, customers and subscriptions, then the
    readings of every hour of October but the last (``grouped``: meters by region, API calls
    priced per region)."""
    await setup(
        f"http://127.0.0.1:{server.port}",
        key,
        MONTH_START.strftime("%Y-%m-%dT%H:%M:%SZ"),
        customers=customers,
        meters=[(meter, "sum") for meter in METERS],
        plan={**PLAN, "prices": GROUPED_PRICES} if grouped else PLAN,
        group_by=["region"] if grouped else (),
    )
    expected = customers * len(METERS) * (HOURS - 1)
    answered = await post_hours(server.port, key, customers, range(HOURS - 1), connections, failed)
    assert answered == expected, f"{answered} of {expected} readings accepted"
    await vacuum(url)


def changing_customers(customers: int, share: float) -> list[int]:
    """The customer numbers that change plan: ``share`` of them, spread evenly."""
    count = round(customers * share)
    return [n * customers // count for n in range(count)] if count else []


async def change_plans(port: int, key: str, numbers: list[int], connections: int) -> None:
    """Each of ``numbers`` moves to ``OTHER_PLAN`` at ``CHANGE_AT``, through the API."""
    headers = {"Authorization": f"Bearer {key}"}
    queue = list(reversed(numbers))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:

        async def worker() -> None:
            while queue:
                customer = f"customer-{queue.pop():04d}"
                listed = await client.get("/v1/subscriptions", params={"customer": customer})
                listed.raise_for_status()
                [sub] = listed.json()["data"]
                patch = {"plan": OTHER_PLAN["code"], "when": CHANGE_AT.strftime("%Y-%m-%dT%H:%M:%SZ")}
                changed = await client.patch(f"/v1/subscriptions/{sub['id']}", json=patch)
                changed.raise_for_status()
                assert changed.json()["replaces"] == sub["id"], changed.text

        await asyncio.gather(*[worker() for _ in range(connections)])


async def prepare_changes(port: int, key: str, customers: int, connections: int) -> None:
    """The second plan, and a card for every customer (the sandbox provider's), so that the
    closing invoices of the changes are paid when finalized, as most are; without one each
    would open a dunning case whose steps the timed run would take."""
    headers = {"Authorization": f"Bearer {key}"}
    queue = list(range(customers))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        (await client.post("/v1/plans", json=OTHER_PLAN)).raise_for_status()

        async def worker() -> None:
            while queue:
                path = f"/v1/customers/customer-{queue.pop():04d}"
                (await client.patch(path, json={"default_payment_method": "pm_card_visa"})).raise_for_status()

        await asyncio.gather(*[worker() for _ in range(connections)])


async def adjust_customers(port: int, key: str, numbers: list[int], connections: int) -> None:
    """Tax, a discount and credits for each of ``numbers``, through the API."""
    headers = {"Authorization": f"Bearer {key}"}
    queue = list(reversed(numbers))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        rate = await client.post(
            "/v1/tax-rates", json={"display_name": "VAT", "percentage": "19", "inclusive": False}
        )
        rate.raise_for_status()
        coupon = {"code": "BENCH20", "percent_off": "20", "duration": "repeating", "duration_in_periods": 3}
        (await client.post("/v1/coupons", json=coupon)).raise_for_status()

        async def worker() -> None:
            while queue:
                path = f"/v1/customers/customer-{queue.pop():04d}"
                (await client.patch(path, json={"tax_rates": [rate.json()["id"]]})).raise_for_status()
                (await client.post(f"{path}/discounts", json={"coupon": "BENCH20"})).raise_for_status()
                grant = {"name": "Welcome", "amount": 2500, "currency": "USD", "category": "promotional"}
                (await client.post(f"{path}/credit-grants", json=grant)).raise_for_status()

        await asyncio.gather(*[worker() for _ in range(connections)])


async def backdate_adjustments(url: str, tenant_id: str) -> None:
    """The server runs on the real clock, so the discounts and grants just made start now, in
    December: moved to the start of October, as if made at signup, they cover the October run."""
    database = Database(url)
    async with database.transaction() as session:
        await session.execute(
            sa.update(CreditGrant)
            .where(CreditGrant.tenant_id == tenant_id)
            .values(effective_at=MONTH_START, created_at=MONTH_START)
        )
        await session.execute(
            sa.update(DiscountRow)
            .where(DiscountRow.tenant_id == tenant_id)
            .values(start=MONTH_START, end=datetime(2027, 1, 1, tzinfo=UTC), created_at=MONTH_START)
        )
    await database.dispose()


async def settle(port: int, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"at": SETTLE_AT.strftime("%Y-%m-%dT%H:%M:%SZ")}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=3600
    ) as client:
        (await client.post("/v1/billing/run", json=body)).raise_for_status()


async def vacuum(url: str) -> None:
    """On PostgreSQL, the tables as autovacuum leaves a month of writes: statistics, hint bits and
    the visibility map set. Left to autovacuum, it may start in the middle of the measurement. On
    SQLite, the write-ahead log checkpointed into the database, so that the run does not pay for
    the set-up's writes."""
    database = Database(url)
    if database.dialect == "postgresql":
        async with database.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql("VACUUM (ANALYZE)")
    else:
        with contextlib.closing(sqlite3.connect(str(make_url(url).database))) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    await database.dispose()


async def load_direct(url: str, tenant_id: str, customers: int) -> None:
    """Meters, a plan, customers and subscriptions, and every hourly rollup of October, inserted
    into the tables (no events)."""
    database = Database(url)
    now = MONTH_START
    async with database.transaction() as session:
        meter_ids = [new_id("mtr") for _ in METERS]
        await session.execute(
            sa.insert(Meter),
            [
                {
                    "id": i,
                    "tenant_id": tenant_id,
                    "key": k,
                    "name": k,
                    "aggregation": "sum",
                    "created_at": now,
                    "updated_at": now,
                }
                for i, k in zip(meter_ids, METERS, strict=True)
            ],
        )
        prices = [{"meter_id": meter_ids[METERS.index(p["meter"])], **p} for p in PRICES]
        plan_id = new_id("plan")
        await session.execute(
            sa.insert(Plan),
            [
                {
                    "id": plan_id,
                    "tenant_id": tenant_id,
                    "code": PLAN["code"],
                    "name": PLAN["name"],
                    "currency": PLAN["currency"],
                    "interval": "month",
                    "base_fee": PLAN["base_fee"],
                    "prices": prices,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
    customer_ids = [new_id("cus") for _ in range(customers)]
    for offset in range(0, customers, CHUNK):
        chunk = customer_ids[offset : offset + CHUNK]
        async with database.transaction() as session:
            await session.execute(
                sa.insert(Customer),
                [
                    {
                        "id": c,
                        "tenant_id": tenant_id,
                        "external_id": f"customer-{offset + n:05d}",
                        "currency": "USD",
                        "locale": "en",
                        "metadata_": {},
                        "payment_status": "ok",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n, c in enumerate(chunk)
                ],
            )
            await session.execute(
                sa.insert(Subscription),
                [
                    {
                        "id": new_id("sub"),
                        "tenant_id": tenant_id,
                        "customer_id": c,
                        "plan_id": plan_id,
                        "timezone": "UTC",
                        "starts_at": MONTH_START,
                        "next_period_end": MONTH_END,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for c in chunk
                ],
            )
    if database.dialect == "postgresql":
        await _rollups_postgresql(database, tenant_id, meter_ids)
    else:
        await _rollups_sqlite(database, tenant_id, customer_ids, meter_ids)
    await database.dispose()
    await vacuum(url)


async def _rollups_postgresql(database: Database, tenant_id: str, meter_ids: list[str]) -> None:
    async with database.transaction() as session:
        await session.execute(
            sa.text(
                """
                INSERT INTO usage_rollups (tenant_id, customer_id, meter_id, hour, event_count, value_sum,
                                           value_max, latest_value, latest_at, latest_seq)
                SELECT c.tenant_id, c.id, m.id, h.hour, 10, (h.n % 97) + 0.5, (h.n % 97) * 0.1, 1, h.hour, 0
                FROM customers c
                CROSS JOIN unnest(CAST(:meters AS text[])) AS m(id)
                CROSS JOIN LATERAL (
                    SELECT g AS n, CAST(:start AS timestamptz) + g * interval '1 hour' AS hour
                    FROM generate_series(0, CAST(:hours AS integer) - 1) g
                ) h
                WHERE c.tenant_id = CAST(:tenant AS text)
                """
            ),
            {"tenant": tenant_id, "meters": meter_ids, "start": MONTH_START, "hours": HOURS},
        )


async def _rollups_sqlite(
    database: Database, tenant_id: str, customer_ids: list[str], meter_ids: list[str]
) -> None:
    table = UsageRollup.__table__
    for customer in customer_ids:
        rows = [
            {
                "tenant_id": tenant_id,
                "customer_id": customer,
                "meter_id": meter,
                "hour": MONTH_START + timedelta(hours=n),
                "event_count": 10,
                "value_sum": Decimal(n % 97) + Decimal("0.5"),
                "value_max": Decimal(n % 97) / 10,
                "latest_value": Decimal(1),
                "latest_at": MONTH_START + timedelta(hours=n),
                "latest_seq": 0,
            }
            for meter in meter_ids
            for n in range(HOURS)
        ]
        async with database.transaction() as session:
            await session.execute(sa.insert(table), rows)


async def bare_aggregate(url: str, tenant_id: str) -> float:
    """Seconds for one GROUP BY over the month's rollups (median of 3, after a warm-up)."""
    database = Database(url)
    query = sa.text(
        "SELECT customer_id, meter_id, sum(event_count), sum(value_sum), max(value_max) FROM usage_rollups"
        " WHERE tenant_id = :tenant AND hour >= :start AND hour < :end GROUP BY customer_id, meter_id"
    )
    start, end = (
        (MONTH_START, MONTH_END)
        if database.dialect == "postgresql"
        else (MONTH_START.replace(tzinfo=None), MONTH_END.replace(tzinfo=None))
    )
    timings = []
    for _ in range(4):
        async with database.read() as session:
            began = time.perf_counter()
            rows = (await session.execute(query, {"tenant": tenant_id, "start": start, "end": end})).all()
            timings.append(time.perf_counter() - began)
    await database.dispose()
    assert len(rows) == 2 * (await count_customers(url, tenant_id)), "the aggregate missed rows"
    return statistics.median(timings[1:])


@dataclass
class Timeline:
    """Seconds from the request to: every draft seen committed, no subscription left waiting for
    its drafts to be recomputed (late usage), and the answer (the run's later steps, then the
    outbox it filled dispatched)."""

    drafted: float
    current: float
    answered: float


async def timed_run(
    client: httpx.AsyncClient, key: str, url: str, tenant_id: str, customers: int
) -> tuple[Timeline, dict[str, Any]]:
    """``POST /v1/billing/run`` at ``RUN_AT``, polling the tables every 100 ms meanwhile."""
    database = Database(url)
    drafted = current = None
    try:
        began = time.perf_counter()
        call = asyncio.create_task(
            client.post(
                "/v1/billing/run",
                json={"at": RUN_AT.strftime("%Y-%m-%dT%H:%M:%SZ")},
                headers={"Authorization": f"Bearer {key}"},
            )
        )
        while current is None and not call.done():
            drafts, flagged = await progress(database, tenant_id)
            seen = time.perf_counter() - began
            if drafted is None and drafts >= customers:
                drafted = seen
            if drafted is not None and flagged == 0:
                current = seen
            await asyncio.sleep(0.1)
        response = await call
        answered = time.perf_counter() - began
    finally:
        await database.dispose()
    response.raise_for_status()
    return Timeline(drafted or answered, current or answered, answered), response.json()


async def progress(database: Database, tenant_id: str) -> tuple[int, int]:
    """The tenant's drafts of periods ending with October, and its subscriptions flagged for late
    usage."""
    invoices, subscriptions = Invoice.__table__, Subscription.__table__
    async with database.read() as session:
        row = (
            await session.execute(
                sa.select(
                    sa.select(sa.func.count())
                    .where(
                        invoices.c.tenant_id == tenant_id,
                        invoices.c.status == "draft",
                        invoices.c.period_end == MONTH_END,
                    )
                    .scalar_subquery(),
                    sa.select(sa.func.count())
                    .where(
                        subscriptions.c.tenant_id == tenant_id, subscriptions.c.usage_changed_at.is_not(None)
                    )
                    .scalar_subquery(),
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def count_drafts(url: str, tenant_id: str) -> tuple[int, int]:
    database = Database(url)
    try:
        return await progress(database, tenant_id)
    finally:
        await database.dispose()


async def count_adjusted(url: str, tenant_id: str) -> tuple[int, int, int]:
    """Drafts with a discount, with tax, and with credits applied (previewed)."""
    database = Database(url)
    try:
        async with database.read() as session:
            counts = await session.execute(
                sa.select(
                    sa.func.count().filter(Invoice.discount_total > 0),
                    sa.func.count().filter(Invoice.tax_total > 0),
                    sa.func.count().filter(Invoice.credits_applied > 0),
                ).where(Invoice.tenant_id == tenant_id, Invoice.status == "draft")
            )
            discounted, taxed, credited = counts.one()
            return int(discounted), int(taxed), int(credited)
    finally:
        await database.dispose()


async def count_customers(url: str, tenant_id: str) -> int:
    database = Database(url)
    async with database.read() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).select_from(Customer).where(Customer.tenant_id == tenant_id)
        )
    await database.dispose()
    return int(count or 0)


async def count_rows(url: str, tenant_id: str) -> tuple[int, int]:
    """The tenant's hourly rollups and usage events."""
    database = Database(url)
    rollups, events = UsageRollup.__table__, UsageEvent.__table__
    async with database.read() as session:
        counts = [
            int(await session.scalar(sa.select(sa.func.count()).where(table.c.tenant_id == tenant_id)) or 0)
            for table in (rollups, events)
        ]
    await database.dispose()
    return counts[0], counts[1]


def database_cpu(name: str | None) -> float:
    """CPU seconds used so far by the PostgreSQL backends of database ``name`` (0 for SQLite)."""
    return sum(process_cpu(pid) for pid in backends(name)) if name else 0.0


@dataclass
class Measured:
    """One run of the bench: its load, and the timed billing run."""

    changed: int  # customers that changed plan mid-October
    changes_took: float
    loaded: float
    late: float
    rollups: int
    events: int
    baseline: float
    timeline: Timeline
    result: dict[str, Any]
    cpu: tuple[float, float]
    drafts: int
    flagged: int
    adjusted: tuple[int, int, int]  # drafts discounted, taxed, with credits
    failed: list[bytes]
    failed_late: list[bytes]
    deadlocks: int


async def bench_once(
    args: argparse.Namespace, changed_share: float, adjusted_share: float = 0.0, *, grouped: bool = False
) -> Measured:
    """A fresh database and server, the month loaded, the changes (if any), the timed run."""
    customers: int = args.customers
    data_dir, url = await bench_database(args.database)
    env = server_env(data_dir, url)
    log = data_dir / "server.log"
    server = Server(env, free_port(), log=log)
    name = make_url(url).database if args.database == "postgresql" else None
    late = 0.0
    failed: list[bytes] = []  # answers of batches resent, while loading
    failed_late: list[bytes] = []  # and while posting the last hour
    changing = changing_customers(customers, changed_share)
    adjusted = changing_customers(customers, adjusted_share)
    try:
        server.start()
        created = json.loads(server.run("tenant", "create", "--name", "Bench", "--json"))
        tenant_id, key = created["tenant_id"], created["api_key"]
        began = time.perf_counter()
        if args.load == "api":
            await load_api(server, url, key, customers, args.connections, failed, grouped=grouped)
        else:
            await load_direct(url, tenant_id, customers)
        loaded = time.perf_counter() - began
        began = time.perf_counter()
        if args.changed_share:
            await prepare_changes(server.port, key, customers, args.connections)
            await change_plans(server.port, key, changing, args.connections)
            await settle(server.port, key)
            await vacuum(url)  # in both runs, as after the load
        if args.adjusted_share:
            if adjusted:
                await adjust_customers(server.port, key, adjusted, args.connections)
                await backdate_adjustments(url, tenant_id)
            # What the set-up queued (the grants' events) is dispatched before the timed run, in both.
            await settle(server.port, key)
            await vacuum(url)
        changes_took = time.perf_counter() - began
        if args.load == "api":
            # The month's last hour, read by the meters after it ended: posted now, just before the run.
            began = time.perf_counter()
            answered = await post_hours(
                server.port, key, customers, range(HOURS - 1, HOURS), args.connections, failed_late
            )
            assert answered == customers * len(METERS), "the last hour's readings were not all accepted"
            late = time.perf_counter() - began
        rollups, events = await count_rows(url, tenant_id)
        baseline = await bare_aggregate(url, tenant_id)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=3600) as client:
            cpu = server.cpu_seconds(), database_cpu(name)
            timeline, result = await timed_run(client, key, url, tenant_id, customers)
            cpu = server.cpu_seconds() - cpu[0], database_cpu(name) - cpu[1]
        drafts, flagged = await count_drafts(url, tenant_id)
        adjusted_drafts = await count_adjusted(url, tenant_id)
        after = await bare_aggregate(url, tenant_id)
    finally:
        server.stop()
        logged = log.read_text(errors="replace").splitlines() if log.exists() else []
        deadlocks = sum(1 for line in logged if "deadlock detected" in line)
        shutil.rmtree(data_dir, ignore_errors=True)  # a SQLite month of 1,000 customers is 1.3 GB
        if args.database == "postgresql":
            await drop_postgres_database(url)
    return Measured(
        changed=len(changing) or len(adjusted),
        changes_took=changes_took,
        loaded=loaded,
        late=late,
        rollups=rollups,
        events=events,
        baseline=min(baseline, after),
        timeline=timeline,
        result=result,
        cpu=cpu,
        drafts=drafts,
        flagged=flagged,
        adjusted=adjusted_drafts,
        failed=failed,
        failed_late=failed_late,
        deadlocks=deadlocks,
    )


def report(args: argparse.Namespace, run: Measured) -> None:
    customers: int = args.customers
    if args.load == "api":
        mode = (
            "api (usage posted to POST /v1/events/batch; the last hour after the others, just before the run)"
        )
    else:
        mode = "direct (rollups inserted into the tables; no events, no late usage)"
    print(f"load:            {mode}")
    print(f"database:        {args.database}")
    print(f"customers:       {customers:,}")
    if args.changed_share and run.changed:
        print(
            f"changed plan:    {run.changed:,} customers, on {CHANGE_AT:%Y-%m-%d}, "
            f"in {run.changes_took:.1f} s "
            "(before the last hour; not timed)"
        )
    if args.adjusted_share and run.changed:
        print(
            f"adjusted:        {run.changed:,} customers with tax, a discount and credits, "
            f"set in {run.changes_took:.1f} s (before the last hour; not timed); drafts: "
            "{:,} discounted, {:,} taxed, {:,} with credits".format(*run.adjusted)
        )
    print(f"rollup rows:     {run.rollups:,} ({run.events:,} usage events)")
    last_hour = (
        f"; the last hour's {customers * len(METERS):,} readings in {run.late:.1f} s" if run.late else ""
    )
    print(f"loaded in:       {run.loaded:.0f} s (not timed){last_hour}")
    if run.failed or run.failed_late:
        print(
            f"resent batches:  {len(run.failed)} while loading, {len(run.failed_late)} of the last hour, "
            "answered "
            + ", ".join(sorted({answer[:3].decode() for answer in run.failed + run.failed_late}))
            + f" (the server logged {run.deadlocks} errors 'deadlock detected')"
        )
    result, timeline, baseline = run.result, run.timeline, run.baseline
    print(
        f"drafts:          {run.drafts} ({result['invoices_created']} reported created, "
        f"{result['drafts_recomputed']} recomputed; {run.flagged} subscriptions still flagged)"
    )
    print(
        f"billing run:     {timeline.answered:.2f} s until it answered "
        f"({customers / timeline.answered:,.0f} invoices/s)"
    )
    print(
        f"  of which:      every draft after {timeline.drafted:.2f} s, no late usage left to fold in after "
        f"{timeline.current:.2f} s, then the outbox"
    )
    database_share = f", database backends {run.cpu[1]:.1f} s" if args.database == "postgresql" else ""
    print(f"CPU in the run:  server {run.cpu[0]:.1f} s{database_share}")
    print(f"bare aggregate:  {baseline:.2f} s (the same rollups; best median of 3, before and after the run)")
    print(
        f"ratio:           {timeline.answered / baseline:.2f}x the bare aggregate until it answered; "
        f"{timeline.drafted / baseline:.2f}x to every draft (target: at most 2x, under 60 s)"
    )


def compare(pairs: list[tuple[Measured, Measured]], what: str = "changed") -> None:
    """The changed runs against the unchanged ones, turn by turn (target: at most 1.10)."""
    print(f"comparison:      turn  plain  {what}  ratio (until it answered; to every draft; CPU)")
    ratios = []
    for turn, (plain, changed) in enumerate(pairs, start=1):
        ratio = changed.timeline.answered / plain.timeline.answered
        drafted = changed.timeline.drafted / plain.timeline.drafted
        cpu = sum(changed.cpu) / sum(plain.cpu)
        ratios.append(ratio)
        print(
            f"{'':17}{turn:>4}  {plain.timeline.answered:>7.2f} s  "
            f"{changed.timeline.answered:>5.2f} s  {ratio:.3f} ({drafted:.3f}; {cpu:.3f})"
        )
    print(
        f"{what}/plain: median {statistics.median(ratios):.3f} over {len(ratios)} turns "
        "(target: at most 1.10)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--load",
        choices=["api", "direct"],
        default="api",
        help="api: usage posted through POST /v1/events/batch (default); "
        "direct: rollups inserted into the tables",
    )
    parser.add_argument(
        "--customers", type=int, default=DEFAULT_CUSTOMERS, help=f"default {DEFAULT_CUSTOMERS}"
    )
    parser.add_argument("--connections", type=int, default=8, help="connections posting usage (--load api)")
    parser.add_argument(
        "--changed-share",
        type=float,
        default=0.0,
        help="compare with runs where this share of the customers changed plan mid-October",
    )
    parser.add_argument(
        "--adjusted-share",
        type=float,
        default=0.0,
        help="compare with runs where this share of the customers have tax, a discount and credits",
    )
    parser.add_argument(
        "--grouped",
        action="store_true",
        help="compare with runs where the meters group by region and API calls are priced per region",
    )
    parser.add_argument(
        "--turns",
        type=int,
        default=2,
        help="plain/other pairs (--changed-share, --adjusted-share, --grouped)",
    )
    args = parser.parse_args()
    if not args.changed_share and not args.adjusted_share and not args.grouped:
        report(args, await bench_once(args, 0.0))
        return
    what = "changed" if args.changed_share else "adjusted" if args.adjusted_share else "grouped"
    pairs = []
    for turn in range(1, args.turns + 1):
        plain = await bench_once(args, 0.0)
        print(f"--- turn {turn}, plain")
        report(args, plain)
        other = await bench_once(args, args.changed_share, args.adjusted_share, grouped=args.grouped)
        print(f"--- turn {turn}, {what}")
        report(args, other)
        pairs.append((plain, other))
    compare(pairs, what)


if __name__ == "__main__":
    asyncio.run(main())
