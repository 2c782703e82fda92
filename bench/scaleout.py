"""Scale-out benchmark: ingestion through one API replica against two, on one PostgreSQL database.

    .venv/bin/python bench/scaleout.py --events 60000   # BILLING_BENCH_POSTGRES_URL, default local

Starts two ``billing serve`` replicas (scheduler off, one secret key) on a fresh PostgreSQL
database, and sets up what bench/ingest.py sets up (1000 customers, 5 meters, batches of 1000
events, 5% of them resent from batches answered earlier). Then the same load generator posts in
alternating turns, one replica then two, ...: in a "one" turn every connection goes to the first
replica; in a "two" turn half the connections go to each, all taking batches from one queue (a
least-busy balancer). Each turn posts fresh events. It prints events/s for both (median of the
turns), the ratio, and where the CPU went: each replica, the database backends serving this
database, the load generator and the whole machine, since on a small machine the replicas compete
for the same cores.

    .venv/bin/python bench/scaleout.py --replica-cpus 0.25   # as root, with cgroups

``--replica-cpus`` gives each replica a CPU limit of its own, as a container's (a cgroup quota of
that many cores in every 10 ms), so that a replica, not the machine, is what runs out:
on a machine whose cores the database and both replicas share, this is how to see whether two
replicas add up to twice one, or whether something they share (locks, the database) holds them
back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    BATCH,
    DUPLICATE_SHARE,
    Server,
    backends,
    bench_database,
    drop_postgres_database,
    free_port,
    make_event,
    post_batches,
    process_cpu,
    server_env,
    setup,
)

SECRET_KEY = "bench-scaleout-secret-key-0123456789abcdef"
TURN_STRIDE = 10**8  # event numbers of turn k start at k * TURN_STRIDE: every turn posts new events
TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 10_000


class CpuLimit:
    """A cgroup of its own (v2, else v1's cpu controller) in which processes may use at most
    ``cores`` seconds of CPU per second of wall time, as under a container's CPU limit."""

    def __init__(self, name: str, cores: float) -> None:
        quota = int(cores * CFS_PERIOD_US)
        if "cpu" in _read(CGROUP_ROOT / "cgroup.controllers").split():
            if "cpu" not in _read(CGROUP_ROOT / "cgroup.subtree_control").split():
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu")
            self.path = CGROUP_ROOT / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        else:
            self.path = CGROUP_ROOT / "cpu" / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        """Move a process, all its threads and those it starts later into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Remove the group, once the processes in it have exited."""
        self.path.rmdir()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def turn_batches(turn: int, events: int, start: datetime, connections: int) -> list[bytes]:
    """Batches of fresh events for ``turn``; 5% of each batch are resent events of batches at least
    ``2 * connections`` back, answered already, as a client resends after losing an answer (the
    first batches repeat their own events instead)."""
    rng = random.Random(turn)
    fresh = int(BATCH * (1 - DUPLICATE_SHARE))
    first, out = turn * TURN_STRIDE, []
    for sent in range(0, events, fresh):
        answered = sent - 2 * connections * fresh
        low, high = (0, answered) if answered > 0 else (sent, sent + fresh)
        numbers = [first + sent + k for k in range(fresh)]
        numbers += [first + rng.randrange(low, high) for _ in range(BATCH - fresh)]
        out.append(json.dumps({"events": [make_event(n, start) for n in numbers]}).encode())
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


@dataclass
class Turn:
    replicas: int
    events_per_s: float
    cpu: dict[str, float]  # share of one core, by process or group
    machine_cores_busy: float


async def run_turn(
    servers: list[Server], key: str, payloads: list[bytes], connections: int, database: str
) -> Turn:
    queue = list(reversed(payloads))
    posted: list[int] = []
    pg_before = {pid: process_cpu(pid) for pid in backends(database)}
    servers_before = [server.cpu_seconds() for server in servers]
    own_before, (busy_before, total_before) = time.process_time(), machine_busy()
    started = time.perf_counter()
    ports = [servers[n % len(servers)].port for n in range(connections)]
    await asyncio.gather(*(post_batches(port, key, queue, posted) for port in ports))
    elapsed = time.perf_counter() - started
    busy, total = machine_busy()
    pg_after = {pid: process_cpu(pid) for pid in backends(database)}
    cpu = {
        f"replica {n + 1}": (server.cpu_seconds() - before) / elapsed
        for n, (server, before) in enumerate(zip(servers, servers_before, strict=True))
    }
    cpu["database"] = sum(pg_after[pid] - pg_before.get(pid, 0.0) for pid in pg_after) / elapsed
    cpu["load generator"] = (time.process_time() - own_before) / elapsed
    return Turn(
        len(servers), sum(posted) / elapsed, cpu, (busy - busy_before) / (total - total_before) * CORES
    )


def describe(turns: list[Turn]) -> str:
    rate = statistics.median(t.events_per_s for t in turns)
    shares = {name: statistics.median(t.cpu[name] for t in turns) for name in turns[0].cpu}
    used = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    busy = statistics.median(t.machine_cores_busy for t in turns)
    return f"{rate:>9,.0f} events/s   CPU (of one core): {used}; machine {busy:.2f} of {CORES} cores busy"


def cost_per_event(turns: list[Turn], *names: str) -> float:
    """Median CPU seconds per event spent by the processes whose names start with one of ``names``."""
    return statistics.median(
        sum(share for name, share in t.cpu.items() if name.startswith(names)) / t.events_per_s for t in turns
    )


def capacity(turns: list[Turn], replicas: int, replica_cores: float) -> float:
    """The rate this machine could carry at the CPU cost measured in ``turns``, if nothing else ran
    on it: a replica uses at most ``replica_cores`` (one Python process: one core at most), and
    all processes share the cores."""
    replica_cost = cost_per_event(turns, "replica")
    total_cost = cost_per_event(turns, "replica", "database", "load generator")
    return min(replicas * replica_cores / replica_cost, CORES / total_cost)


def costs(turns: list[Turn]) -> str:
    return ", ".join(
        f"{name} {cost_per_event(turns, name) * 1e6:.0f} ms"
        for name in ("replica", "database", "load generator")
    )


async def bench(args: argparse.Namespace) -> None:
    data_dir, url = await bench_database("postgresql", prefix="billing-bench-scaleout-")
    database = url.rsplit("/", 1)[1]
    env = {**server_env(data_dir, url), "BILLING_SECRET_KEY": SECRET_KEY}
    servers = [Server(env, free_port()), Server(env, free_port())]
    limits = [CpuLimit(f"billing-bench-replica-{n}", args.replica_cpus) for n in (1, 2) if args.replica_cpus]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    one: list[Turn] = []
    two: list[Turn] = []
    try:
        for n, server in enumerate(servers):
            server.start()
            if limits:
                limits[n].add(server.pid)
        key = json.loads(servers[0].run("tenant", "create", "--name", "Bench", "--json"))["api_key"]
        await setup(f"http://127.0.0.1:{servers[0].port}", key)
        # Warm both replicas (their customer and meter caches) before measuring.
        await run_turn(
            servers, key, turn_batches(0, 20 * BATCH, start, args.connections), args.connections, database
        )
        for turn in range(1, 2 * args.turns + 1):
            payloads = turn_batches(turn, args.events // args.turns, start, args.connections)
            if turn % 2:
                one.append(await run_turn(servers[:1], key, payloads, args.connections, database))
            else:
                two.append(await run_turn(servers, key, payloads, args.connections, database))
    finally:
        for server in servers:
            server.stop()
        for limit in limits:
            limit.remove()
        await drop_postgres_database(url)

    ratio = statistics.median(t.events_per_s for t in two) / statistics.median(t.events_per_s for t in one)
    print("database:        PostgreSQL (a fresh database on BILLING_BENCH_POSTGRES_URL's server)")
    print(
        f"load:            {args.events:,} events per configuration in {args.turns} turns each, "
        f"batches of {BATCH} ({DUPLICATE_SHARE:.0%} duplicates), {args.connections} connections"
    )
    if args.replica_cpus:
        print(f"CPU limit:       {args.replica_cpus:g} cores per replica (a cgroup quota, as a container's)")
    print(f"one replica:     {describe(one)}")
    print(f"two replicas:    {describe(two)}")
    print(f"ratio:           {ratio:.2f}x one replica (target 1.6x)")
    # The same costs (all turns) for both: what two cores allow, whatever else ran meanwhile.
    replica_cores = args.replica_cpus or 1.0
    best_one, best_two = capacity(one + two, 1, replica_cores), capacity(one + two, 2, replica_cores)
    print(f"CPU per 1000:    {costs(one + two)} (all turns; replicas together)")
    print(
        f"at that cost:    one replica at most {best_one:,.0f} events/s ({replica_cores:g} core), "
        f"two at most {best_two:,.0f} events/s ({CORES} cores shared with the database): "
        f"{best_two / best_one:.2f}x with nothing else running"
    )
    print("(events/s, CPU shares: median of the turns; 'database' counts this database's backends only)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000, help="events per configuration, all turns")
    parser.add_argument("--turns", type=int, default=3, help="turns per configuration, alternating")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--replica-cpus", type=float, default=0.0, help="CPU limit per replica, in cores (root, cgroups)"
    )
    args = parser.parse_args()
    if args.replica_cpus:
        try:
            CpuLimit("billing-bench-probe", args.replica_cpus).remove()
        except OSError as exc:
            parser.error(f"--replica-cpus needs root and a writable cgroup file system: {exc}")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
