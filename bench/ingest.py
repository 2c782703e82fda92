"""Ingestion benchmark: the real server over HTTP against a raw-insert baseline from the same run.

    .venv/bin/python bench/ingest.py --database sqlite --events 200000
    .venv/bin/python bench/ingest.py --database postgresql --events 200000
    .venv/bin/python bench/ingest.py --database sqlite --events 200000 --dimensions

Starts ``billing serve`` on a fresh database, creates 1000 customers and 5 meters, then posts
batches of 1000 events (5% duplicates, realistic properties) from concurrent clients. The
baseline inserts the same rows into a table with the same unique constraint, with the same
driver, without HTTP or validation; a second one into a copy of ``usage_events`` with all of
its indexes, which is what the database must do whatever the service does. Prints events/s,
batch latency, the server's RSS and CPU (and the database's) and the ratios to the baselines.
Every event names one of 20 models and a direction; ``--dimensions`` makes every meter group
its usage by both (40 groups per customer, meter and month).

Before the timed run, an untimed warm-up posts one event per (customer, meter, model, direction)
in the period's first hour, with or without ``--dimensions``: the steady state of a month, where
every group is already open (recorded, and known to the server's process) when most usage comes.
``--cold`` leaves it out, so that nearly every event of the timed run opens a group: the worst
case, a period's first minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from billing.core.db.engine import Database
from billing.core.db.inserts import insert_ignore
from billing.core.db.types import ExactDecimal
from billing.metering.usage_models import UsageEvent

ROOT = Path(__file__).resolve().parent.parent
# ``billing`` as this interpreter runs it, importing from PYTHONPATH (``server_env`` puts this
# checkout there; -P keeps the working directory off sys.path): the code under test is this
# checkout's, whichever virtualenv the benchmark runs from.
BILLING = [sys.executable, "-P", "-m", "billing.cli"]
CUSTOMERS = 1000
METERS = [
    ("api_calls", "sum"),
    ("storage_gb_hours", "sum"),
    ("seats", "max"),
    ("active_users", "unique_count"),
    ("plan_tier", "latest"),
]
BATCH = 1000
DUPLICATE_SHARE = 0.05
REGIONS = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"]
MODELS = [f"model-{n:02d}" for n in range(20)]
DIMENSIONS = ["model", "direction"]
POSTGRES_ADMIN_URL = os.environ.get(
    "BILLING_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_postgres_database() -> str:
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(POSTGRES_ADMIN_URL)
    connection = await asyncpg.connect(
        admin.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return admin.set(database=name).render_as_string(hide_password=False)


async def bench_database(database: str, prefix: str = "billing-bench-") -> tuple[Path, str]:
    """A fresh data dir, and a fresh database of ``database``'s dialect to go with it."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    if database == "postgresql":
        return data_dir, await create_postgres_database()
    return data_dir, f"sqlite+aiosqlite:///{data_dir}/billing.db"


def server_env(data_dir: Path, url: str) -> dict[str, str]:
    """The environment of a ``billing serve`` under benchmark: no scheduler, quiet logs."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BILLING_DATA_DIR": str(data_dir),
        "BILLING_DATABASE_URL": url,
        "BILLING_SCHEDULER": "off",
        "BILLING_LOG_LEVEL": "warning",
    }


async def drop_postgres_database(url: str) -> None:
    admin = make_url(POSTGRES_ADMIN_URL)
    connection = await asyncpg.connect(
        admin.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    await connection.close()


class Server:
    """``billing serve`` on ``port``; its log (stderr) goes to the file ``log``, or nowhere."""

    def __init__(self, env: dict[str, str], port: int, log: Path | None = None) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, *args: str) -> str:
        return subprocess.run(
            [*BILLING, *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def start(self) -> None:
        self.run("migrate")
        with self.log.open("ab") if self.log else open(os.devnull, "wb") as stderr:
            self.process = subprocess.Popen(
                [*BILLING, "serve", "--port", str(self.port)], env=self.env, stderr=stderr
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def memory_mib(self, field: str) -> float:
        """A memory figure of the server from /proc: ``VmRSS`` now, ``VmHWM`` at its peak."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


def make_event(n: int, start: datetime) -> dict[str, Any]:
    """Event number ``n``, always the same, so that a resent one is a true duplicate."""
    rng = random.Random(n)
    meter, aggregation = METERS[n % len(METERS)]
    customer = (n // len(METERS)) % CUSTOMERS
    properties: dict[str, Any] = {"region": rng.choice(REGIONS), "sdk": "python/4.2.0"}
    if aggregation == "unique_count":
        properties["user_id"] = f"user-{rng.randrange(5000)}"
    value = (
        str(rng.randrange(1, 10_000))
        if aggregation != "sum"
        else f"{rng.randrange(1, 10**6)}.{rng.randrange(1000):03d}"
    )
    properties |= {"model": rng.choice(MODELS), "direction": rng.choice(["input", "output"])}
    return {
        "id": f"evt-{n:010d}",
        "customer": f"customer-{customer:04d}",
        "meter": meter,
        "timestamp": (start + timedelta(seconds=n % 86_400)).isoformat().replace("+00:00", "Z"),
        "value": value,
        "properties": properties,
    }


def warm_up_batches(start: datetime) -> list[bytes]:
    """One event per (customer, meter, model, direction), in the first hour from ``start``, by
    customer: each group the timed run can name is opened once, as in a period's first hour."""
    events = []
    for customer in range(CUSTOMERS):
        for meter, aggregation in METERS:
            for model in MODELS:
                for direction in ("input", "output"):
                    n = len(events)
                    properties = {"region": REGIONS[n % len(REGIONS)], "sdk": "python/4.2.0"}
                    if aggregation == "unique_count":
                        properties["user_id"] = f"user-{n % 5000}"
                    properties |= {"model": model, "direction": direction}
                    timestamp = start + timedelta(seconds=n % 3600)
                    events.append(
                        {
                            "id": f"warm-{n:010d}",
                            "customer": f"customer-{customer:04d}",
                            "meter": meter,
                            "timestamp": timestamp.isoformat().replace("+00:00", "Z"),
                            "value": "1",
                            "properties": properties,
                        }
                    )
    return [json.dumps({"events": events[n : n + BATCH]}).encode() for n in range(0, len(events), BATCH)]


async def warm_up(port: int, key: str, start: datetime, clients: int) -> tuple[int, float]:
    """Post ``warm_up_batches`` (untimed by the caller); the events posted and the seconds taken."""
    queue, posted = list(reversed(warm_up_batches(start))), []
    started = time.perf_counter()
    await asyncio.gather(*[post_batches(port, key, queue, posted) for _ in range(clients)])
    return sum(posted), time.perf_counter() - started


def batches(total: int, start: datetime, seed: int = 7) -> list[bytes]:
    """Encoded batches; 5% of each batch repeats events already sent."""
    rng = random.Random(seed)
    fresh_per_batch = int(BATCH * (1 - DUPLICATE_SHARE))
    out, sent = [], 0
    while sent < total:
        events = [make_event(sent + k, start) for k in range(fresh_per_batch)]
        earlier = range(sent) if sent else range(fresh_per_batch)
        events += [make_event(rng.choice(earlier), start) for _ in range(BATCH - fresh_per_batch)]
        out.append(json.dumps({"events": events}).encode())
        sent += fresh_per_batch
    return out


async def setup(
    base: str,
    key: str,
    starts_at: str = "2026-01-01T00:00:00Z",
    *,
    customers: int = CUSTOMERS,
    meters: Sequence[tuple[str, str]] = METERS,
    plan: dict[str, Any] | None = None,
    group_by: Sequence[str] = (),
) -> None:
    """Through the API: ``meters`` (key, aggregation; each grouped by ``group_by``), one plan
    (``plan``'s body; by default ``metered``, a per-unit price on each meter) and ``customers``
    customers, ``customer-0000`` on, each subscribed to it from ``starts_at``."""
    plan = plan or {
        "code": "metered",
        "prices": [{"meter": m, "model": "per_unit", "unit_amount": "0.001"} for m, _ in meters],
    }
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for meter, aggregation in meters:
            body: dict[str, Any] = {"key": meter, "name": meter, "aggregation": aggregation}
            if group_by:
                body["group_by"] = list(group_by)
            if aggregation == "unique_count":
                body["unique_property"] = "user_id"
            (await client.post("/v1/meters", json=body)).raise_for_status()
        (await client.post("/v1/plans", json=plan)).raise_for_status()
        semaphore = asyncio.Semaphore(16)

        async def customer(n: int) -> None:
            async with semaphore:
                body = {"external_id": f"customer-{n:04d}", "email": f"billing+{n}@example.com"}
                (await client.post("/v1/customers", json=body)).raise_for_status()
                subscription = {
                    "customer": body["external_id"],
                    "plan": plan["code"],
                    "starts_at": starts_at,
                }
                (await client.post("/v1/subscriptions", json=subscription)).raise_for_status()

        await asyncio.gather(*[customer(n) for n in range(customers)])


class Counts(msgspec.Struct):
    accepted: int
    duplicates: int


_counts = msgspec.json.Decoder(Counts)


def batch_request(port: int, key: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/events/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def post_batches(
    port: int,
    key: str,
    queue: list[bytes],
    posted: list[int],
    latencies: list[float] | None = None,
    failed: list[bytes] | None = None,
) -> None:
    """One keep-alive connection posting batches from ``queue`` until it is empty (raw HTTP/1.1:
    lighter than an HTTP library, so that the load generator takes little of the machine).

    An answer other than 200 raises; but with ``failed`` given, a batch answered with a 5xx is put
    back at the far end of the queue and resent later, as a client does (nothing of a failed batch
    is stored), and the answer is appended to ``failed``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            started = time.perf_counter()
            payload = queue.pop()
            writer.write(batch_request(port, key, payload))
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"
            )
            body = await reader.readexactly(length)
            if head[9:12] != b"200" and failed is not None and head[9:10] == b"5":
                failed.append(head[9:12] + b" " + body)
                queue.insert(0, payload)
                continue
            if head[9:12] != b"200":
                raise RuntimeError(f"batch answered {head[9:12].decode()}: {body[:300]!r}")
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
            counts = _counts.decode(body)
            posted.append(counts.accepted + counts.duplicates)
    finally:
        writer.close()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used by ``pid`` so far; 0 once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(database: str) -> list[int]:
    """PostgreSQL backends connected to ``database`` (the process title names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                found.append(int(entry.name))
    return found


async def post_all(
    port: int, key: str, payloads: list[bytes], clients: int, server: Server, database: str | None
) -> dict[str, Any]:
    queue = list(reversed(payloads))
    latencies: list[float] = []
    posted: list[int] = []
    rss_samples: list[float] = []

    async def sample_rss() -> None:
        while True:
            rss_samples.append(server.memory_mib("VmRSS"))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_rss())
    pg_before = {pid: process_cpu(pid) for pid in backends(database)} if database else {}
    started, server_cpu, client_cpu = time.perf_counter(), server.cpu_seconds(), time.process_time()
    await asyncio.gather(*[post_batches(port, key, queue, posted, latencies) for _ in range(clients)])
    elapsed = time.perf_counter() - started
    sampler.cancel()
    pg_after = {pid: process_cpu(pid) for pid in backends(database)} if database else {}
    latencies.sort()
    return {
        "events_per_s": sum(posted) / elapsed,
        "posted": sum(posted),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rss_samples": rss_samples,
        "server_cpu": (server.cpu_seconds() - server_cpu) / elapsed,
        "database_cpu": sum(pg_after[pid] - pg_before.get(pid, 0.0) for pid in pg_after) / elapsed,
        "client_cpu": (time.process_time() - client_cpu) / elapsed,
    }


def _baseline_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "bench_raw_events",
        metadata,
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("meter_id", sa.String(40), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", ExactDecimal(), nullable=False),
        sa.Column("properties", sa.JSON()),
        sa.UniqueConstraint("tenant_id", "event_id"),
    )


def _schema_table(metadata: sa.MetaData) -> sa.Table:
    """A copy of ``usage_events``, with all of its indexes (renamed: names are per database)."""
    table = UsageEvent.__table__.to_metadata(metadata, name="bench_schema_events")
    for item in [*table.indexes, *table.constraints]:
        if isinstance(item.name, str):
            item.name = f"bench_{item.name}"
    return table


async def insert_baseline(
    url: str, payloads: list[bytes], clients: int, make_table: Callable[[sa.MetaData], sa.Table]
) -> float:
    """The same rows, same driver, into ``make_table``'s table; no HTTP, no validation, no rollups."""
    metadata = sa.MetaData()
    table = make_table(metadata)
    database = Database(url)
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    decoded = [json.loads(payload)["events"] for payload in payloads]
    received_at = datetime(2026, 11, 6, tzinfo=UTC)
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for events in decoded:
        rows = [
            {
                "tenant_id": "ten_bench",
                "event_id": e["id"],
                "customer_id": e["customer"],
                "meter_id": e["meter"],
                "timestamp": datetime.fromisoformat(e["timestamp"]),
                "value": Decimal(e["value"]),
                "properties": e["properties"],
                "payload_hash": uuid.uuid4().hex,
                "received_at": received_at,
            }
            for e in sorted(events, key=lambda e: e["id"])  # key order, as the service writes
        ]
        queue.put_nowait([{k: v for k, v in row.items() if k in table.c} for row in rows])
    total = sum(len(events) for events in decoded)

    async def worker() -> None:
        while not queue.empty():
            rows = queue.get_nowait()
            async with database.transaction() as session:
                await insert_ignore(session, table, rows)

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(clients)])
    elapsed = time.perf_counter() - started
    await database.dispose()
    return total / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--events", type=int, default=200_000, help="fresh events to post (plus 5%% duplicates)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--baseline-events", type=int, default=100_000)
    parser.add_argument(
        "--dimensions", action="store_true", help="every meter grouped by model and direction (20 x 2)"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no warm-up: nearly every event opens a group (the worst case, a period's first minutes)",
    )
    args = parser.parse_args()

    data_dir, url = await bench_database(args.database)
    env = server_env(data_dir, url)
    port = free_port()
    server = Server(env, port)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    payloads = batches(args.events, start)
    database = make_url(url).database if args.database == "postgresql" else None
    try:
        server.start()
        key = json.loads(server.run("tenant", "create", "--name", "Bench", "--json"))["api_key"]
        await setup(f"http://127.0.0.1:{port}", key, group_by=DIMENSIONS if args.dimensions else ())
        warmed = None if args.cold else await warm_up(port, key, start, args.clients)
        result = await post_all(port, key, payloads, args.clients, server, database)
        peak = server.memory_mib("VmHWM")
        server.stop()
        baseline_payloads = batches(args.baseline_events, start, seed=11)
        baseline = await insert_baseline(url, baseline_payloads, args.clients, _baseline_table)
        schema = await insert_baseline(url, baseline_payloads, args.clients, _schema_table)
    finally:
        server.stop()
        if args.database == "postgresql":
            await drop_postgres_database(url)

    rss = result["rss_samples"] or [0.0]
    thirds = [rss[len(rss) // 3], rss[2 * len(rss) // 3], rss[-1]]
    print(f"database:        {args.database}")
    print(f"dimensions:      {'every meter grouped by model and direction' if args.dimensions else 'none'}")
    if warmed is None:
        print("warm-up:         none (cold: nearly every event opens a group)")
    else:
        print(
            f"warm-up:         {warmed[0]:,} events, one per (customer, meter, model, direction), "
            f"untimed ({warmed[1]:.0f} s)"
        )
    print(f"events posted:   {result['posted']:,} (5% duplicates), {BATCH} a batch, {args.clients} clients")
    print(f"throughput:      {result['events_per_s']:,.0f} events/s")
    print(f"batch latency:   p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms")
    print(
        f"server RSS:      peak {peak:.0f} MiB; at 1/3, 2/3 and the end of the run "
        + " / ".join(f"{value:.0f}" for value in thirds)
        + " MiB"
    )
    database_cpu = f", database {result['database_cpu']:.0%}" if database else ""
    print(
        f"CPU use:         server {result['server_cpu']:.0%} of a core{database_cpu}, "
        f"load generator {result['client_cpu']:.0%}"
    )
    print(f"raw baseline:    {baseline:,.0f} rows/s (insert-ignore, same driver and unique constraint)")
    print(f"ratio:           {result['events_per_s'] / baseline:.2f} of the raw-insert baseline")
    print(
        f"schema baseline: {schema:,.0f} rows/s (the same rows into a copy of usage_events, all its "
        f"indexes): the service does {result['events_per_s'] / schema:.2f} of that"
    )


if __name__ == "__main__":
    asyncio.run(main())
