"""Ingestion A/B: two checkouts of the service, measured in alternating turns on the same machine.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/ingest_ab.py /tmp/before . --database sqlite --turns 4 --events 50000

On a shared or virtual machine the same benchmark moves by a third from one run to the next, and
within a run as the database grows; alternating turns (A, B, A, B, ...) on two servers set up
alike puts both through the same conditions. Each checkout runs as ``billing serve`` with the
checkout first on PYTHONPATH (its own code, this checkout's virtual environment), on a fresh
database of its own, set up as ``bench/ingest.py`` sets up; every turn posts fresh events (batches
of 1000, 5% resent) to A, then the same to B. Turn 0 warms both up and is not counted. Prints
events/s and server CPU per event for every turn, and the median of each side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    Server,
    bench_database,
    drop_postgres_database,
    free_port,
    post_batches,
    server_env,
    setup,
)
from bench.scaleout import turn_batches  # noqa: E402


async def start(checkout: Path, database: str) -> tuple[Server, str, str]:
    data_dir, url = await bench_database(database, prefix="billing-bench-ab-")
    server = Server({**server_env(data_dir, url), "PYTHONPATH": str(checkout)}, free_port())
    server.start()
    key = json.loads(server.run("tenant", "create", "--name", "Bench", "--json"))["api_key"]
    await setup(f"http://127.0.0.1:{server.port}", key)
    return server, key, url


async def turn(server: Server, key: str, payloads: list[bytes], clients: int) -> tuple[float, float]:
    """Events/s and server CPU microseconds per event."""
    queue, posted = list(reversed(payloads)), []
    cpu, began = server.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*[post_batches(server.port, key, queue, posted) for _ in range(clients)])
    elapsed, cpu = time.perf_counter() - began, server.cpu_seconds() - cpu
    return sum(posted) / elapsed, cpu / sum(posted) * 1e6


async def compare(checkouts: list[Path], args: argparse.Namespace) -> None:
    sides = [await start(checkout, args.database) for checkout in checkouts]
    rates: list[list[float]] = [[], []]
    try:
        for number in range(args.turns + 1):
            payloads = turn_batches(number + 1, args.events, datetime(2026, 11, 1, tzinfo=UTC), args.clients)
            for side, (server, key, _) in enumerate(sides):
                rate, cpu = await turn(server, key, payloads, args.clients)
                if number:
                    rates[side].append(rate)
                print(f"turn {number} {checkouts[side]}: {rate:,.0f} events/s, {cpu:.1f} us CPU/event")
    finally:
        for server, _, url in sides:
            server.stop()
            if args.database == "postgresql":
                await drop_postgres_database(url)
    for side, checkout in enumerate(checkouts):
        print(f"{checkout}: median {statistics.median(rates[side]):,.0f} events/s over {args.turns} turns")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkouts", nargs=2, help="A and B: directories holding a billing/ package")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--events", type=int, default=50_000, help="fresh events per turn and side")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(compare([Path(checkout).resolve() for checkout in args.checkouts], args))


if __name__ == "__main__":
    main()
