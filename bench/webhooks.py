"""Stripe webhook benchmark: signed deliveries stored per second, against a bare endpoint
on the same server.

    .venv/bin/python bench/webhooks.py --database sqlite
    .venv/bin/python bench/webhooks.py --database postgresql   # BILLING_BENCH_POSTGRES_URL, default local

Starts the service exactly as ``billing serve`` does (uvicorn, scheduler off), plus one bare
route registered on the same app, ``POST /bench/bare``, which reads the body and answers a
constant: same process, same middleware, same HTTP stack, no work. Then, from 32 keep-alive
connections, it posts signed ``customer.source.expiring`` events in Stripe's shape (each a new
event, so each is stored) to ``/webhooks/stripe/{tenant}``, and the same requests to the bare
route, in alternating turns that start and end with the bare route; it prints throughput,
latency and the ratio, and checks in the database that every acknowledged event was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import stripe
from litestar import Request, Response, post

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import Server, bench_database, drop_postgres_database, free_port, server_env  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"
SECRETS = ["whsec_bench_old_0123456789abcdefghijklmnopqrst", "whsec_bench_new_0123456789abcdefghijklmnopqrst"]
BARE_BODY = b'{"status":"ok"}'


class BenchServer(Server):
    """``billing serve`` with one extra route; ``run`` (the CLI) and ``stop`` are inherited."""

    def start(self) -> None:
        self.run("migrate")
        self.process = subprocess.Popen(
            [str(PYTHON), str(Path(__file__).resolve()), "serve", "--port", str(self.port)],
            env=self.env,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not become ready")


@post("/bench/bare", status_code=200, include_in_schema=False)
async def bare(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The baseline: read the body, answer a constant."""
    await request.body()
    return Response(BARE_BODY, media_type="application/json")


def serve(port: int) -> None:
    """The server side: the app of ``billing serve`` with the bare route, run the same way."""
    import uvicorn

    from billing.app import create_app
    from billing.core.settings import Settings
    from billing.web.slow_clients import server_options

    settings = Settings.from_env()
    app = create_app(settings)
    app.register(bare)
    uvicorn.run(app, host="127.0.0.1", port=port, **server_options(settings))


def stripe_event(n: int, created: int) -> str:
    """A ``customer.source.expiring`` event as Stripe sends it: pretty-printed, about 1.3 KB."""
    card_id = f"card_1Q{n:022d}"
    body = {
        "id": f"evt_1Q{secrets.token_hex(6)}{n:010d}",
        "object": "event",
        "api_version": "2026-10-28.clover",
        "created": created,
        "data": {
            "object": {
                "id": card_id,
                "object": "card",
                "address_city": None,
                "address_country": None,
                "address_line1": None,
                "address_line1_check": None,
                "address_zip": None,
                "address_zip_check": None,
                "brand": "Visa",
                "country": "US",
                "customer": f"cus_Bench{n % 1000:05d}",
                "cvc_check": "pass",
                "dynamic_last4": None,
                "exp_month": 12,
                "exp_year": 2026,
                "fingerprint": "Xt5EWLLDS7FJjR1c",
                "funding": "credit",
                "last4": "4242",
                "metadata": {},
                "name": None,
                "tokenization_method": None,
                "wallet": None,
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.source.expiring",
    }
    return json.dumps(body, indent=2)


def requests(path: str, count: int, start: int, port: int) -> list[bytes]:
    """Complete HTTP/1.1 requests, signed as Stripe signs them (with the newer secret)."""
    out = []
    now = int(time.time())
    for n in range(start, start + count):
        payload = stripe_event(n, now - 5)
        header = stripe.WebhookSignature.generate_signature_header(payload, SECRETS[1], now)
        raw = payload.encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
            f"Content-Type: application/json; charset=utf-8\r\nStripe-Signature: {header}\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        )
        out.append(head.encode() + raw)
    return out


async def _connection(port: int, queue: list[bytes], latencies: list[float], answers: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            answers[status] = answers.get(status, 0) + 1
    finally:
        writer.close()


async def load(port: int, batch: list[bytes], connections: int, server: Server) -> dict[str, Any]:
    """Post every request of ``batch`` over ``connections`` keep-alive connections, as fast as answered."""
    queue = list(reversed(batch))
    latencies: list[float] = []
    answers: dict[int, int] = {}
    cpu_before, started = server.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*[_connection(port, queue, latencies, answers) for _ in range(connections)])
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "per_s": len(batch) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
        "server_cpu": (server.cpu_seconds() - cpu_before) / elapsed,
        "answers": answers,
    }


async def stored_count(url: str) -> int:
    from billing.core.db.engine import Database

    database = Database(url)
    try:
        async with database.read() as session:
            return int(await session.scalar(sa.text("SELECT count(*) FROM stripe_events")) or 0)
    finally:
        await database.dispose()


def _line(name: str, result: dict[str, Any]) -> str:
    return (
        f"{name:<18} {result['per_s']:>8,.0f}/s   p50 {result['p50_ms']:5.1f} ms   "
        f"p99 {result['p99_ms']:5.1f} ms   server CPU {result['server_cpu']:.0%}   "
        f"answers {result['answers']}"
    )


async def bench(args: argparse.Namespace) -> None:
    data_dir, url = await bench_database(args.database, prefix="billing-bench-webhooks-")
    env = server_env(data_dir, url)
    port = free_port()
    server = BenchServer(env, port)
    try:
        server.start()
        created = json.loads(server.run("tenant", "create", "--name", "Bench", "--json"))
        tenant_id = created["tenant_id"]
        patch = {"stripe_webhook_secrets": SECRETS}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            headers = {"Authorization": f"Bearer {created['api_key']}"}
            (await client.patch("/v1/tenant", json=patch, headers=headers)).raise_for_status()
        hook = f"/webhooks/stripe/{tenant_id}"
        per_turn = args.deliveries // args.turns
        warm = requests(hook, 500, 10**8, port)
        await load(port, warm, args.connections, server)
        await load(port, requests("/bench/bare", 500, 10**8, port), args.connections, server)
        bare_runs, hook_runs = [], []
        for turn in range(args.turns):
            bare_runs.append(
                await load(port, requests("/bench/bare", per_turn, 0, port), args.connections, server)
            )
            hook_runs.append(
                await load(port, requests(hook, per_turn, turn * per_turn, port), args.connections, server)
            )
        bare_runs.append(
            await load(port, requests("/bench/bare", per_turn, 0, port), args.connections, server)
        )
        server.stop()
        rows = await stored_count(url)
    finally:
        server.stop()
        if args.database == "postgresql":
            await drop_postgres_database(url)

    def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
        answers: dict[int, int] = {}
        for run in runs:
            for status, count in run["answers"].items():
                answers[status] = answers.get(status, 0) + count
        return {
            "per_s": statistics.median(r["per_s"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "server_cpu": statistics.median(r["server_cpu"] for r in runs),
            "answers": answers,
        }

    bare, hook_result = combine(bare_runs), combine(hook_runs)
    print(f"database:          {args.database}")
    total = per_turn * args.turns
    print(f"deliveries:        {total:,} signed events, {args.connections} connections, {args.turns} turns")
    print(_line("bare endpoint", bare))
    print(_line("webhook (stored)", hook_result))
    print(f"stored rows:       {rows:,} (warm-up included: {per_turn * args.turns + 500:,} expected)")
    print(f"ratio:             {hook_result['per_s'] / bare['per_s']:.2f} of the bare endpoint")
    print("(throughput: median of turns; p50: median of turns; p99: worst turn)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) run the server side")
    serve_parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--deliveries", type=int, default=30_000, help="webhook deliveries measured, in all turns"
    )
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port)
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
