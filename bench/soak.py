"""Soak run: mixed traffic at half of the measured peak, for a long time, watching errors,
latency and memory over time.

    .venv/bin/python bench/soak.py --database sqlite --minutes 30
    .venv/bin/python bench/soak.py --database postgresql --minutes 30   # BILLING_BENCH_POSTGRES_URL

Starts ``billing serve`` with its scheduler on (billing runs, dunning, dispatch all tick as in
production) on a fresh database with 1000 customers subscribed since the start of the month.
The mix, per operation: 45% a batch of 100 usage events (5% of them resent), 15% a single
event, 15% a usage query, 10% an invoice list, 15% a signed Stripe webhook. First the mix
runs closed-loop from 16 clients for ``--calibrate-seconds`` to find the peak operations/s;
then it runs open-loop (arrivals on a fixed schedule, whatever the answers) at half that rate
for ``--minutes``. Every minute it prints operations, errors (any answer but the expected 2xx,
or a transport error), p50/p99 latency and the server's RSS; at the end, the totals and the
RSS trend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import stripe

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    METERS,
    Server,
    bench_database,
    drop_postgres_database,
    free_port,
    server_env,
    setup,
)
from bench.webhooks import SECRETS, stripe_event  # noqa: E402
from billing.core.clock import SystemClock  # noqa: E402

CUSTOMERS = 1000  # bench.ingest.setup creates customer-0000 .. customer-0999
CALIBRATION_CLIENTS = 16
CLOCK = SystemClock()
MIX: list[tuple[str, int]] = [("batch", 45), ("event", 15), ("usage", 15), ("invoices", 10), ("webhook", 15)]


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # "operation answer", for errors
    rss_mib: float = 0.0
    cpu: float = 0.0


@dataclass
class Traffic:
    """Builds and sends one operation of the mix; records its latency and outcome."""

    client: httpx.AsyncClient
    tenant_id: str
    auth: dict[str, str]
    rng: random.Random
    sent: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def _event(self) -> dict[str, Any]:
        if self.sent and self.rng.random() < 0.05:
            return self.rng.choice(self.sent)
        self.counter += 1
        meter, _ = self.rng.choice(METERS)
        moment = CLOCK.now() - timedelta(seconds=self.rng.randint(1, 3600))
        event = {
            "id": f"soak-{uuid.uuid4().hex}",
            "customer": f"customer-{self.rng.randrange(CUSTOMERS):04d}",
            "meter": meter,
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "value": str(self.rng.randint(1, 500)),
            "properties": {"user_id": f"u{self.rng.randrange(5000)}", "region": "eu-west-1"},
        }
        if len(self.sent) < 10_000:
            self.sent.append(event)
        return event

    async def batch(self) -> httpx.Response:
        body = {"events": [self._event() for _ in range(100)]}
        return await self.client.post("/v1/events/batch", json=body, headers=self.auth)

    async def event(self) -> httpx.Response:
        return await self.client.post("/v1/events", json=self._event(), headers=self.auth)

    async def usage(self) -> httpx.Response:
        customer = f"customer-{self.rng.randrange(CUSTOMERS):04d}"
        meter, _ = self.rng.choice(METERS)
        now = CLOCK.now().replace(minute=0, second=0, microsecond=0)
        params = {
            "meter": meter,
            "from": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            "to": (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
            "granularity": "hour",
        }
        return await self.client.get(f"/v1/customers/{customer}/usage", params=params, headers=self.auth)

    async def invoices(self) -> httpx.Response:
        return await self.client.get("/v1/invoices", params={"limit": 20}, headers=self.auth)

    async def webhook(self) -> httpx.Response:
        now = int(time.time())
        payload = stripe_event(self.rng.randrange(10**9), now - 2)
        header = stripe.WebhookSignature.generate_signature_header(payload, SECRETS[1], now)
        headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
        return await self.client.post(f"/webhooks/stripe/{self.tenant_id}", content=payload, headers=headers)

    def pick(self) -> Callable[[], Awaitable[httpx.Response]]:
        name = self.rng.choices([n for n, _ in MIX], weights=[w for _, w in MIX])[0]
        operation: Callable[[], Awaitable[httpx.Response]] = getattr(self, name)
        return operation


async def one(traffic: Traffic, minute: Minute) -> None:
    operation = traffic.pick()
    started = time.perf_counter()
    try:
        response = await operation()
        answer = str(response.status_code)
    except httpx.HTTPError as exc:
        answer = type(exc).__name__
    minute.latencies.append(time.perf_counter() - started)
    if not answer.startswith("2"):
        minute.errors += 1
        minute.failures[f"{operation.__name__} {answer}"] += 1


async def calibrate(traffic: Traffic, seconds: float) -> float:
    """Peak operations/s of the mix, closed-loop."""
    minute = Minute()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            await one(traffic, minute)

    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(CALIBRATION_CLIENTS)])
    return len(minute.latencies) / (time.perf_counter() - started)


async def soak(traffic: Traffic, server: Server, rate: float, minutes: int) -> list[Minute]:
    """Open loop: an operation every 1/rate seconds, whatever the answers."""
    results: list[Minute] = []
    pending: set[asyncio.Task[None]] = set()
    interval = 1 / rate
    for _ in range(minutes):
        minute = Minute()
        results.append(minute)
        cpu_before, started = server.cpu_seconds(), time.perf_counter()
        next_at = started
        while (now := time.perf_counter()) < started + 60:
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            next_at += interval
            task = asyncio.create_task(one(traffic, minute))
            pending.add(task)
            task.add_done_callback(pending.discard)
        minute.rss_mib = server.memory_mib("VmRSS")
        minute.cpu = (server.cpu_seconds() - cpu_before) / (time.perf_counter() - started)
        print(_minute_line(len(results), minute), flush=True)
    await asyncio.gather(*pending)
    return results


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * share) - 1, 0)] * 1000 if ordered else 0.0


def _minute_line(index: int, minute: Minute) -> str:
    return (
        f"minute {index:3d}: {len(minute.latencies):6d} ops, {minute.errors:4d} errors, "
        f"p50 {_percentile(minute.latencies, 0.5):7.1f} ms, "
        f"p99 {_percentile(minute.latencies, 0.99):7.1f} ms, "
        f"RSS {minute.rss_mib:6.1f} MiB, server CPU {minute.cpu:4.0%}"
        + (f"; errors: {dict(minute.failures)}" if minute.failures else "")
    )


def _slope_per_10_minutes(values: list[float]) -> float:
    """Least-squares slope, in units per 10 minutes."""
    if len(values) < 2:
        return 0.0
    xs = list(range(len(values)))
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True))
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return numerator / denominator * 10


async def bench(args: argparse.Namespace) -> None:
    data_dir, url = await bench_database(args.database, prefix="billing-bench-soak-")
    env = {**server_env(data_dir, url), "BILLING_SCHEDULER": "on"}
    port = free_port()
    server = Server(env, port)
    try:
        server.start()
        created = json.loads(server.run("tenant", "create", "--name", "Soak", "--json"))
        base = f"http://127.0.0.1:{port}"
        # Subscriptions from this month's start: the soak measures steady traffic, not a backlog of
        # past periods billed at the first tick.
        await setup(base, created["api_key"], starts_at=CLOCK.now().strftime("%Y-%m-01T00:00:00Z"))
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            patch = {"stripe_webhook_secrets": SECRETS}
            (await client.patch("/v1/tenant", json=patch, headers=headers)).raise_for_status()
            traffic = Traffic(client, created["tenant_id"], headers, random.Random(args.seed))
            peak = await calibrate(traffic, args.calibrate_seconds)
            rate = peak * args.load
            print(
                f"database: {args.database}; peak {peak:.1f} ops/s closed-loop; soaking at {rate:.1f} ops/s"
            )
            minutes = await soak(traffic, server, rate, args.minutes)
        _summary(minutes)
    finally:
        server.stop()
        if args.database == "postgresql":
            await drop_postgres_database(url)


def _summary(minutes: list[Minute]) -> None:
    operations = sum(len(m.latencies) for m in minutes)
    errors = sum(m.errors for m in minutes)
    rss = [m.rss_mib for m in minutes]
    settled = rss[len(rss) // 3 :] if len(rss) >= 3 else rss
    p99s = [_percentile(m.latencies, 0.99) for m in minutes]
    print(f"operations: {operations:,}; errors: {errors} (goal 0)")
    print(f"p99 per minute: first {p99s[0]:.1f} ms, last {p99s[-1]:.1f} ms, worst {max(p99s):.1f} ms")
    print(
        f"RSS: first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB, max {max(rss):.1f} MiB; "
        f"trend after the first third {_slope_per_10_minutes(settled):+.2f} MiB per 10 minutes (goal: flat)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--calibrate-seconds", type=float, default=30)
    parser.add_argument("--load", type=float, default=0.5, help="share of the measured peak")
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
