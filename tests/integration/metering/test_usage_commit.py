"""Committing usage batches: concurrent batches on SQLite share a transaction and answer exactly
what one transaction per batch, in arrival order, would have."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import httpx
import msgspec
import pytest

from billing.core.context import AppContext
from billing.invoicing.coverage import SUBSCRIPTION_COVERAGE
from billing.metering import commit, ingest
from tests.conftest import TenantHandle, eventually, subscribe
from tests.integration.metering.test_events import event, total, usage


def _ingest(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, ingest.IngestResult]:
    return ingest.ingest(*args, coverage=SUBSCRIPTION_COVERAGE, **kwargs)


def raw(event_id: str, value: str = "1", **overrides: Any) -> bytes:
    return msgspec.json.encode(event(event_id, value, **overrides))


class HeldTurn:
    """Makes the first commit wait until released, so that the batches posted meanwhile queue
    up and are committed together, and records the size of every group committed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> None:
        self.release = asyncio.Event()
        self.groups: list[int] = []
        self.fail_on = fail_on
        original = commit._commit_group

        async def wrapped(database: Any, group: list[commit.Batch]) -> None:
            first = not self.groups
            self.groups.append(len(group))
            if first:
                await self.release.wait()
            ids = {c.row.event_id for batch in group for c in batch.candidates}
            if self.fail_on in ids:
                raise RuntimeError("this batch cannot be stored")
            await original(database, group)

        monkeypatch.setattr(commit, "_commit_group", wrapped)

    @staticmethod
    async def queued(ctx: AppContext, count: int) -> None:
        """Wait until ``count`` batches wait for the turn that the first commit holds."""
        await eventually(lambda: commit._group_committer(ctx.database).queued == count)


@pytest.mark.sqlite_only
async def test_queued_batches_are_committed_together_and_answered_in_arrival_order(
    ctx: AppContext, client: httpx.AsyncClient, metered: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldTurn(monkeypatch)
    now = ctx.clock.now()

    def post(*events: bytes) -> asyncio.Task[ingest.IngestResult]:
        return asyncio.create_task(_ingest(ctx.database, metered.id, list(events), now=now))

    first = post(raw("lead", "1"))
    await eventually(lambda: held.groups == [1])  # the first holds the turn; the next three queue
    queued: list[asyncio.Task[ingest.IngestResult]] = []
    for events in ([raw("a", "2"), raw("b", "3")], [raw("a", "2"), raw("c", "4")], [raw("b", "9")]):
        queued.append(post(*events))
        await held.queued(ctx, len(queued))  # one at a time: the order they arrive in is known
    held.release.set()
    results = [await task for task in (first, *queued)]
    assert held.groups == [1, 3]
    assert [[r.status for r in result.results] for result in results] == [
        ["accepted"],
        ["accepted", "accepted"],
        ["duplicate", "accepted"],
        ["conflict"],
    ]
    assert total(await usage(client, metered)) == 1 + 2 + 3 + 4


@pytest.mark.sqlite_only
async def test_a_batch_that_fails_in_a_group_fails_alone(
    ctx: AppContext, client: httpx.AsyncClient, metered: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldTurn(monkeypatch, fail_on="poison")
    now = ctx.clock.now()

    def post(*events: bytes) -> asyncio.Task[ingest.IngestResult]:
        return asyncio.create_task(_ingest(ctx.database, metered.id, list(events), now=now))

    first = post(raw("lead", "1"))
    await eventually(lambda: held.groups == [1])
    good, bad = post(raw("good", "5")), post(raw("poison", "7"))
    await held.queued(ctx, 2)
    held.release.set()
    assert (await first).accepted == 1
    assert (await good).accepted == 1
    with pytest.raises(RuntimeError, match="cannot be stored"):
        await bad
    assert held.groups == [1, 2, 1, 1]  # the group of two failed, then each alone
    assert total(await usage(client, metered)) == 1 + 5


@pytest.mark.sqlite_only
async def test_batches_of_two_tenants_in_one_group_are_each_stored_for_their_tenant(
    ctx: AppContext,
    client: httpx.AsyncClient,
    metered: TenantHandle,
    make_tenant: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = await make_tenant(name="Other")
    headers = other.headers()
    customer = {"external_id": "acme-1"}
    assert (await client.post("/v1/customers", headers=headers, json=customer)).status_code == 201
    meter = {"key": "api_calls", "name": "API calls", "aggregation": "sum"}
    assert (await client.post("/v1/meters", headers=headers, json=meter)).status_code == 201
    await subscribe(client, other, ["acme-1"], starts_at="2026-01-01T00:00:00Z")
    held = HeldTurn(monkeypatch)
    now = ctx.clock.now()
    lead = asyncio.create_task(_ingest(ctx.database, metered.id, [raw("lead", "1")], now=now))
    await eventually(lambda: held.groups == [1])
    # The same event id for two tenants in one group: each tenant's own, accepted for both.
    mine = asyncio.create_task(_ingest(ctx.database, metered.id, [raw("shared", "2")], now=now))
    theirs = asyncio.create_task(_ingest(ctx.database, other.id, [raw("shared", "3")], now=now))
    await held.queued(ctx, 2)
    held.release.set()
    assert [(await task).accepted for task in (lead, mine, theirs)] == [1, 1, 1]
    assert held.groups == [1, 2]
    assert total(await usage(client, metered)) == 1 + 2
    assert total(await usage(client, other)) == 3
