"""billing.core.db on real databases: insert-ignore, row claims, SQLite transactions, UTC timestamps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

import billing.core.db.inserts
from billing.core.context import AppContext
from billing.core.db.claims import claim_rows, finish_claim, new_claim_token
from billing.core.db.engine import Database
from billing.core.db.inserts import insert_ignore, insert_rows
from billing.core.ids import new_id
from billing.models import metadata
from tests.conftest import TenantHandle

OUTBOX = metadata.tables["outbox"]
TENANTS = metadata.tables["tenants"]
LEASE = timedelta(minutes=2)


def outbox_row(tenant_id: str, now: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id("obx"),
        "event_id": new_id("evt"),
        "tenant_id": tenant_id,
        "consumer": "test_db",
        "topic": "test.topic",
        "payload": {"n": 1},
        "created_at": now,
        "available_at": now,
        "attempts": 0,
    }
    row.update(overrides)
    return row


def tenant_row(now: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id("ten"),
        "name": "Raw",
        "currency": "USD",
        "invoice_prefix": "RAW",
        "billing_timezone": "UTC",
        "grace_period_hours": 0,
        "payment_provider": "sandbox",
        "stripe_webhook_secrets_encrypted": [],
        "stripe_livemode": False,
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    return row


async def insert_outbox(ctx: AppContext, rows: list[dict[str, Any]]) -> None:
    async with ctx.database.transaction() as session:
        await session.execute(OUTBOX.insert(), rows)


async def outbox_by_id(ctx: AppContext) -> dict[str, sa.Row[Any]]:
    async with ctx.database.read() as session:
        return {row.id: row for row in (await session.execute(sa.select(OUTBOX))).all()}


def due_for(consumer: str, now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(OUTBOX.c.consumer == consumer, OUTBOX.c.available_at <= now)


# --- insert_ignore and insert_rows ---------------------------------------------------------------


@pytest.fixture(params=["values", "unnest"])
def insert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing many rows: SQLAlchemy's multi-row VALUES, and on PostgreSQL one array
    per column (``unnest``), which takes over from ``UNNEST_MIN_ROWS`` rows on."""
    monkeypatch.setattr(billing.core.db.inserts, "UNNEST_MIN_ROWS", 10**9 if request.param == "values" else 1)
    return str(request.param)


async def test_many_rows_read_back_the_same_whichever_way_they_are_written(
    ctx: AppContext, tenant: TenantHandle, insert_path: str
) -> None:
    now = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
    kolkata = timezone(timedelta(hours=5, minutes=30))
    rows = [
        outbox_row(tenant.id, now, payload={"nested": [1, {"é": None}], "n": n}, processed_at=None)
        for n in range(25)
    ]
    rows[3]["payload"] = {}
    rows[4]["available_at"] = now.astimezone(kolkata)  # stored as the same instant in UTC
    for row in rows:
        del row["attempts"]  # a column default (0) fills it in
    async with ctx.database.transaction() as session:
        await insert_rows(session, OUTBOX, rows[:12])
        inserted = await insert_ignore(session, OUTBOX, rows[12:], returning=[OUTBOX.c.id])
    assert sorted(r.id for r in inserted) == sorted(r["id"] for r in rows[12:])
    stored = await outbox_by_id(ctx)
    for row in rows:
        got = stored[row["id"]]
        assert (got.event_id, got.tenant_id, got.consumer, got.topic) == (
            row["event_id"],
            row["tenant_id"],
            row["consumer"],
            row["topic"],
        )
        assert (got.payload, got.created_at, got.available_at, got.attempts) == (
            row["payload"],
            now,
            now,
            0,
        )
        assert got.available_at.tzinfo is UTC and got.processed_at is None and got.last_error is None


async def test_insert_ignore_returns_only_the_inserted_rows(
    ctx: AppContext, tenant: TenantHandle, insert_path: str
) -> None:
    now = ctx.clock.now()
    rows = [outbox_row(tenant.id, now) for _ in range(3)]

    async with ctx.database.transaction() as session:
        inserted = await insert_ignore(session, OUTBOX, rows, returning=[OUTBOX.c.id, OUTBOX.c.event_id])

    assert sorted(r.id for r in inserted) == sorted(r["id"] for r in rows)
    assert {r.event_id for r in inserted} == {r["event_id"] for r in rows}
    assert set(await outbox_by_id(ctx)) == {r["id"] for r in rows}


async def test_insert_ignore_of_an_existing_unique_key_returns_nothing_and_keeps_the_first_row(
    ctx: AppContext, tenant: TenantHandle, insert_path: str
) -> None:
    now = ctx.clock.now()
    first = outbox_row(tenant.id, now, payload={"version": "first"})
    async with ctx.database.transaction() as session:
        assert len(await insert_ignore(session, OUTBOX, [first], returning=[OUTBOX.c.id])) == 1

    # Same (event_id, consumer): the unique constraint, not the primary key, is what conflicts.
    again = outbox_row(
        tenant.id, now + timedelta(hours=1), event_id=first["event_id"], payload={"version": "second"}
    )
    async with ctx.database.transaction() as session:
        inserted = await insert_ignore(session, OUTBOX, [again], returning=[OUTBOX.c.id])

    assert inserted == []
    stored = await outbox_by_id(ctx)
    assert list(stored) == [first["id"]]
    assert stored[first["id"]].payload == {"version": "first"}
    assert stored[first["id"]].created_at == now


async def test_insert_ignore_of_a_mixed_batch_returns_exactly_the_new_rows(
    ctx: AppContext, tenant: TenantHandle, insert_path: str
) -> None:
    now = ctx.clock.now()
    existing = [outbox_row(tenant.id, now) for _ in range(2)]
    async with ctx.database.transaction() as session:
        await insert_ignore(session, OUTBOX, existing, returning=[OUTBOX.c.id])

    conflicting = [outbox_row(tenant.id, now, event_id=row["event_id"]) for row in existing]
    new = [outbox_row(tenant.id, now) for _ in range(3)]
    batch = [new[0], conflicting[0], new[1], conflicting[1], new[2]]
    async with ctx.database.transaction() as session:
        inserted = await insert_ignore(session, OUTBOX, batch, returning=[OUTBOX.c.id])

    assert sorted(r.id for r in inserted) == sorted(r["id"] for r in new)
    assert set(await outbox_by_id(ctx)) == {r["id"] for r in existing + new}


async def test_insert_ignore_skips_a_primary_key_conflict_in_tenants(ctx: AppContext) -> None:
    now = ctx.clock.now()
    first = tenant_row(now, name="First")
    async with ctx.database.transaction() as session:
        assert [r.id for r in await insert_ignore(session, TENANTS, [first], returning=[TENANTS.c.id])] == [
            first["id"]
        ]
        again = await insert_ignore(
            session, TENANTS, [tenant_row(now, id=first["id"], name="Second")], returning=[TENANTS.c.id]
        )
    assert again == []
    async with ctx.database.read() as session:
        names = (await session.execute(sa.select(TENANTS.c.name))).scalars().all()
    assert names == ["First"]


async def test_insert_ignore_of_no_rows_returns_an_empty_list(ctx: AppContext) -> None:
    async with ctx.database.transaction() as session:
        assert await insert_ignore(session, OUTBOX, [], returning=[OUTBOX.c.id]) == []


# --- claim_rows / finish_claim --------------------------------------------------------------------


async def test_claim_rows_leases_at_most_limit_of_the_oldest_due_rows(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    now = ctx.clock.now()
    due = [outbox_row(tenant.id, now, available_at=now - timedelta(minutes=m)) for m in (3, 2, 1)]
    later = [outbox_row(tenant.id, now, available_at=now + timedelta(days=1)) for _ in range(2)]
    other_consumer = [outbox_row(tenant.id, now, consumer="someone_else")]
    await insert_outbox(ctx, due + later + other_consumer)

    async with ctx.database.transaction() as session:
        token, claimed = await claim_rows(
            session,
            OUTBOX,
            due=due_for("test_db", now),
            order_by=[OUTBOX.c.available_at, OUTBOX.c.id],
            limit=2,
            now=now,
            lease=LEASE,
        )

    # order_by picks which rows (the oldest); UPDATE ... RETURNING gives them in no set order.
    assert {r.id for r in claimed} == {due[0]["id"], due[1]["id"]}
    assert all(r.claimed_by == token and r.claim_expires_at == now + LEASE for r in claimed)
    stored = await outbox_by_id(ctx)
    assert {i for i, r in stored.items() if r.claimed_by is not None} == {due[0]["id"], due[1]["id"]}
    assert stored[due[0]["id"]].claimed_by == token
    assert stored[due[0]["id"]].claim_expires_at == now + LEASE

    async with ctx.database.transaction() as session:
        _, rest = await claim_rows(
            session,
            OUTBOX,
            due=due_for("test_db", now),
            order_by=[OUTBOX.c.available_at],
            limit=10,
            now=now,
            lease=LEASE,
        )
    assert [r.id for r in rest] == [due[2]["id"]]


async def test_claim_rows_gets_nothing_while_the_lease_is_live_and_everything_once_it_expires(
    ctx: AppContext, tenant: TenantHandle
) -> None:
    now = ctx.clock.now()
    rows = [outbox_row(tenant.id, now) for _ in range(3)]
    await insert_outbox(ctx, rows)

    async def claim(token: str | None = None) -> tuple[str, list[sa.Row[Any]]]:
        at = ctx.clock.now()
        async with ctx.database.transaction() as session:
            return await claim_rows(
                session,
                OUTBOX,
                due=due_for("test_db", at),
                order_by=[OUTBOX.c.id],
                limit=10,
                now=at,
                lease=LEASE,
                token=token,
            )

    first_token, first = await claim()
    assert len(first) == 3

    assert (await claim())[1] == []
    ctx.clock.advance(LEASE - timedelta(seconds=1))
    assert (await claim())[1] == []

    ctx.clock.advance(timedelta(seconds=1))  # exactly at expiry: free again
    second_token, second = await claim(token="clm_second")
    assert second_token == "clm_second"
    assert sorted(r.id for r in second) == sorted(r["id"] for r in rows)
    assert all(r.claimed_by == "clm_second" for r in second)
    assert all(r.claim_expires_at == ctx.clock.now() + LEASE for r in second)
    assert first_token != second_token


async def test_finish_claim_is_fenced_on_the_live_claim(ctx: AppContext, tenant: TenantHandle) -> None:
    now = ctx.clock.now()
    row = outbox_row(tenant.id, now)
    await insert_outbox(ctx, [row])

    async def claim() -> str:
        at = ctx.clock.now()
        async with ctx.database.transaction() as session:
            token, claimed = await claim_rows(
                session,
                OUTBOX,
                due=due_for("test_db", at),
                order_by=[OUTBOX.c.id],
                limit=1,
                now=at,
                lease=LEASE,
            )
        assert [r.id for r in claimed] == [row["id"]]
        return token

    stale = await claim()
    ctx.clock.advance(LEASE + timedelta(seconds=1))
    live = await claim()
    before = (await outbox_by_id(ctx))[row["id"]]

    processed_at = ctx.clock.now()
    async with ctx.database.transaction() as session:
        assert (
            await finish_claim(session, OUTBOX, row["id"], stale, processed_at=processed_at, attempts=1)
            is False
        )
    assert (await outbox_by_id(ctx))[row["id"]] == before
    assert before.claimed_by == live and before.processed_at is None

    async with ctx.database.transaction() as session:
        assert (
            await finish_claim(session, OUTBOX, row["id"], live, processed_at=processed_at, attempts=1)
            is True
        )
    after = (await outbox_by_id(ctx))[row["id"]]
    assert after.processed_at == processed_at
    assert after.attempts == 1
    assert after.claimed_by is None
    assert after.claim_expires_at is None

    # Once released, the old live token is stale too.
    async with ctx.database.transaction() as session:
        assert await finish_claim(session, OUTBOX, row["id"], live, attempts=99) is False
    assert (await outbox_by_id(ctx))[row["id"]].attempts == 1


@pytest.mark.postgres_only
@pytest.mark.parametrize("claimers", [2, 4])
async def test_concurrent_claimers_never_share_a_row_and_together_claim_all(
    ctx: AppContext, tenant: TenantHandle, database_url: str, claimers: int
) -> None:
    now = ctx.clock.now()
    rows = [outbox_row(tenant.id, now) for _ in range(500)]
    await insert_outbox(ctx, rows)
    open_transactions = 0
    most_open = 0
    # Every claimer holds its first batch's row locks until all of them hold one: the claims
    # really overlap, and a claimer that waited on another's locks instead of skipping them
    # would never reach the barrier.
    first_batches_held = asyncio.Barrier(claimers)

    async def claimer(database: Database) -> list[str]:
        nonlocal open_transactions, most_open
        got: list[str] = []
        first = True
        while True:
            async with database.transaction() as session:
                _, batch = await claim_rows(
                    session,
                    OUTBOX,
                    due=due_for("test_db", now),
                    order_by=[OUTBOX.c.available_at, OUTBOX.c.id],
                    limit=7,
                    now=now,
                    lease=LEASE,
                    token=new_claim_token(),
                )
                assert len(batch) <= 7
                # Hold the row locks while the other claimers run.
                open_transactions += 1
                most_open = max(most_open, open_transactions)
                if first:
                    await asyncio.wait_for(first_batches_held.wait(), timeout=10)
                    first = False
                await asyncio.sleep(0)
                open_transactions -= 1
            if not batch:
                return got
            got.extend(r.id for r in batch)

    databases = [Database(database_url, pool_size=1) for _ in range(claimers)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(claimer(db) for db in databases)), timeout=20)
    finally:
        for db in databases:
            await db.dispose()

    everything = [row_id for got in results for row_id in got]
    assert len(everything) == len(set(everything)), "a row was claimed twice"
    assert set(everything) == {r["id"] for r in rows}
    assert most_open == claimers, "the claimers never all held a claim at once"
    assert all(got for got in results), "a claimer never got a batch"
    stored = await outbox_by_id(ctx)
    assert all(r.claimed_by is not None for r in stored.values())


# --- SQLite transactions --------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.sqlite_only
async def test_sqlite_exception_inside_a_transaction_rolls_back_its_inserts(ctx: AppContext) -> None:
    now = ctx.clock.now()
    with pytest.raises(Boom):
        async with ctx.database.transaction() as session:
            await session.execute(TENANTS.insert(), [tenant_row(now), tenant_row(now)])
            assert (await session.execute(sa.select(sa.func.count()).select_from(TENANTS))).scalar() == 2
            raise Boom

    async with ctx.database.read() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(TENANTS))).scalar() == 0


@pytest.mark.sqlite_only
async def test_sqlite_concurrent_read_modify_write_increments_are_serialised(
    ctx: AppContext, database_url: str
) -> None:
    now = ctx.clock.now()
    row = tenant_row(now, grace_period_hours=0)
    await insert_tenant(ctx, row)
    database = Database(database_url)

    async def increment() -> None:
        async with database.transaction() as session:
            value = (
                await session.execute(
                    sa.select(TENANTS.c.grace_period_hours).where(TENANTS.c.id == row["id"])
                )
            ).scalar_one()
            await asyncio.sleep(0)  # let every other increment read before this one writes
            await session.execute(
                sa.update(TENANTS).where(TENANTS.c.id == row["id"]).values(grace_period_hours=value + 1)
            )

    try:
        await asyncio.wait_for(asyncio.gather(*(increment() for _ in range(20))), timeout=20)
    finally:
        await database.dispose()

    async with ctx.database.read() as session:
        final = (
            await session.execute(sa.select(TENANTS.c.grace_period_hours).where(TENANTS.c.id == row["id"]))
        ).scalar_one()
    assert final == 20


async def insert_tenant(ctx: AppContext, row: dict[str, Any]) -> None:
    async with ctx.database.transaction() as session:
        await session.execute(TENANTS.insert(), [row])


@pytest.mark.sqlite_only
async def test_sqlite_read_does_not_wait_for_a_writer_and_sees_only_committed_rows(
    ctx: AppContext, database_url: str
) -> None:
    reader = Database(database_url)
    try:
        async with ctx.database.transaction() as session:
            await session.execute(TENANTS.insert(), [tenant_row(ctx.clock.now())])
            # The writer holds SQLite's write lock; a read-only transaction must not queue behind it.
            async with asyncio.timeout(5), reader.read() as read_session:
                count = (await read_session.execute(sa.select(sa.func.count()).select_from(TENANTS))).scalar()
            assert count == 0
        async with asyncio.timeout(5), reader.read() as read_session:
            count = (await read_session.execute(sa.select(sa.func.count()).select_from(TENANTS))).scalar()
        assert count == 1
    finally:
        await reader.dispose()


@pytest.mark.sqlite_only
async def test_sqlite_connection_enforces_foreign_keys_in_wal_mode(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.read() as session:
            foreign_keys = (await session.execute(sa.text("PRAGMA foreign_keys"))).scalar()
            journal_mode = (await session.execute(sa.text("PRAGMA journal_mode"))).scalar()
            busy_timeout = (await session.execute(sa.text("PRAGMA busy_timeout"))).scalar()
    finally:
        await database.dispose()
    assert foreign_keys == 1
    assert journal_mode == "wal"
    assert busy_timeout is not None and busy_timeout > 0


@pytest.mark.sqlite_only
async def test_sqlite_rejects_a_row_whose_foreign_key_is_missing(ctx: AppContext) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with ctx.database.transaction() as session:
            await session.execute(OUTBOX.insert(), [outbox_row("ten_missing", ctx.clock.now())])
    assert await outbox_by_id(ctx) == {}


# --- UTCDateTime ----------------------------------------------------------------------------------


async def test_utc_datetime_returns_an_aware_non_utc_value_as_the_same_instant_in_utc(
    ctx: AppContext,
) -> None:
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    written = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=kathmandu)
    row = tenant_row(ctx.clock.now(), created_at=written)
    async with ctx.database.transaction() as session:
        await session.execute(TENANTS.insert(), [row])

    async with ctx.database.read() as session:
        read = (await session.execute(sa.select(TENANTS.c.created_at))).scalar_one()

    assert read == written
    assert read.tzinfo is not None
    assert read.utcoffset() == timedelta(0)
    assert read.tzinfo == UTC
    assert read.replace(tzinfo=None) == datetime(2026, 3, 28, 19, 45, 15, 123456)


async def test_utc_datetime_compares_instants_not_offsets(ctx: AppContext) -> None:
    # 12:00+05:45 is 06:15Z: earlier than 07:00Z although "12:00" sorts after "07:00" as text.
    early = datetime(2026, 11, 21, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=45)))
    late = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
    rows = [tenant_row(ctx.clock.now(), name="late", created_at=late)]
    rows.append(tenant_row(ctx.clock.now(), name="early", created_at=early))
    async with ctx.database.transaction() as session:
        await session.execute(TENANTS.insert(), rows)

    cutoff = datetime(2026, 11, 21, 1, 0, tzinfo=timezone(timedelta(hours=-5)))  # 06:00Z
    async with ctx.database.read() as session:
        ordered = (await session.execute(sa.select(TENANTS.c.name).order_by(TENANTS.c.created_at))).scalars()
        assert list(ordered) == ["early", "late"]
        after = await session.execute(sa.select(TENANTS.c.name).where(TENANTS.c.created_at > cutoff))
        assert sorted(after.scalars()) == ["early", "late"]
        between = await session.execute(
            sa.select(TENANTS.c.name).where(TENANTS.c.created_at < datetime(2026, 11, 21, 6, 30, tzinfo=UTC))
        )
        assert list(between.scalars()) == ["early"]


async def test_utc_datetime_rejects_a_naive_datetime(ctx: AppContext) -> None:
    row = tenant_row(ctx.clock.now(), created_at=datetime(2026, 11, 21, 12, 0))
    with pytest.raises((ValueError, sa.exc.StatementError), match="naive datetime"):
        async with ctx.database.transaction() as session:
            await session.execute(TENANTS.insert(), [row])
    async with ctx.database.read() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(TENANTS))).scalar() == 0
