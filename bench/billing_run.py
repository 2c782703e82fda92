"""Billing-run benchmark: close one month of hourly usage into drafts, against a bare aggregate.

Loads N customers (subscribed since the start of October, UTC) with one hourly rollup per hour of
October on 2 meters, starts ``billing serve``, and times ``POST /v1/billing/run`` at the end of
October until every draft exists. The baseline, measured in the same run on the same rows, is
one bare SQL aggregate: the sum, count and max per (customer, meter) over the month's rollups.

    .venv/bin/python bench/billing_run.py --database postgresql --customers 10000
    .venv/bin/python bench/billing_run.py --database sqlite --customers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa

import billing.models  # noqa: F401  (every table, for foreign keys)
from bench.ingest import (
    Server,
    bench_database,
    drop_postgres_database,
    free_port,
    server_env,
)
from billing.core.db.engine import Database
from billing.core.ids import new_id
from billing.customers.models import Customer
from billing.invoicing.models import Invoice, Plan, Subscription
from billing.metering.models import Meter
from billing.metering.usage_models import UsageRollup

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = int((MONTH_END - MONTH_START) / timedelta(hours=1))
METERS = ("api_calls", "storage_gb_hours")
CHUNK = 2000


async def load(url: str, tenant_id: str, customers: int) -> None:
    """Meters, a plan, customers and subscriptions, and every hourly rollup of October."""
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
        prices = [
            {"meter_id": meter_ids[0], "meter": METERS[0], "model": "per_unit", "unit_amount": "0.0002"},
            {
                "meter_id": meter_ids[1],
                "meter": METERS[1],
                "model": "graduated",
                "tiers": [
                    {"up_to": "1000", "unit_amount": "0", "flat_amount": 0},
                    {"up_to": None, "unit_amount": "0.0015", "flat_amount": 0},
                ],
            },
        ]
        plan_id = new_id("plan")
        await session.execute(
            sa.insert(Plan),
            [
                {
                    "id": plan_id,
                    "tenant_id": tenant_id,
                    "code": "pro",
                    "name": "Pro",
                    "currency": "USD",
                    "interval": "month",
                    "base_fee": 4900,
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
    # As autovacuum leaves a month of rollups written hour by hour: statistics, hint bits and the
    # visibility map set. Left to autovacuum, it may start in the middle of the measurement.
    async with database.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM (ANALYZE) usage_rollups")


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


async def _until_drafted(url: str, tenant_id: str, customers: int, call: asyncio.Task[Any]) -> float:
    """When the last draft was seen committed (the run answers only after dispatching the outbox
    of ``invoice.created`` events it filled, which is not closing periods)."""
    while await count_drafts(url, tenant_id) < customers:
        if call.done():
            break
        await asyncio.sleep(0.1)
    return time.perf_counter()


async def count_customers(url: str, tenant_id: str) -> int:
    database = Database(url)
    async with database.read() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).select_from(Customer).where(Customer.tenant_id == tenant_id)
        )
    await database.dispose()
    return int(count or 0)


async def count_drafts(url: str, tenant_id: str) -> int:
    database = Database(url)
    async with database.read() as session:
        count = await session.scalar(
            sa.select(sa.func.count())
            .select_from(Invoice)
            .where(Invoice.tenant_id == tenant_id, Invoice.status == "draft")
        )
    await database.dispose()
    return int(count or 0)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--customers", type=int, default=None, help="default 10000 on PostgreSQL, 1000 on SQLite"
    )
    args = parser.parse_args()
    customers = args.customers or (10_000 if args.database == "postgresql" else 1000)

    data_dir, url = await bench_database(args.database)
    env = server_env(data_dir, url)
    server = Server(env, free_port())
    try:
        server.start()
        created = json.loads(server.run("tenant", "create", "--name", "Bench", "--json"))
        tenant_id, key = created["tenant_id"], created["api_key"]
        began = time.perf_counter()
        await load(url, tenant_id, customers)
        print(
            f"loaded {customers} customers x {len(METERS)} meters x {HOURS} hours"
            f" in {time.perf_counter() - began:.0f} s"
        )
        baseline = await bare_aggregate(url, tenant_id)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=3600) as client:
            began = time.perf_counter()
            call = asyncio.create_task(
                client.post(
                    "/v1/billing/run",
                    json={"at": "2026-11-01T00:00:00Z"},
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
            elapsed = await _until_drafted(url, tenant_id, customers, call) - began
            response = await call
            answered = time.perf_counter() - began
        response.raise_for_status()
        drafts = await count_drafts(url, tenant_id)
        after = await bare_aggregate(url, tenant_id)
    finally:
        server.stop()
        if args.database == "postgresql":
            await drop_postgres_database(url)

    baseline = min(baseline, after)
    print(f"database:        {args.database}")
    print(f"rollup rows:     {customers * len(METERS) * HOURS:,}")
    print(f"drafts created:  {drafts} ({response.json()['invoices_created']} reported)")
    print(f"billing run:     {elapsed:.2f} s to every draft ({customers / elapsed:,.0f} invoices/s)")
    print(f"answered after:  {answered:.2f} s (the run's other steps, then the outbox it filled)")
    print(f"bare aggregate:  {baseline:.2f} s")
    print(f"ratio:           {elapsed / baseline:.2f}x the bare aggregate (target: at most 2x, under 60 s)")


if __name__ == "__main__":
    asyncio.run(main())
