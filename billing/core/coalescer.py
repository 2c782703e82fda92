"""Concurrent requests sharing one round trip to the database.

Whoever holds the turn runs, in one round trip, every request queued so far (up to a limit)
and hands each waiting request its own answer. A request that arrives while a round trip is in
flight waits for the next one, and an idle server runs a lone request at once, without waiting
for company. Used where many small requests would each pay a transaction's fixed cost: Stripe
deliveries, and usage batches on SQLite (one writer, whose commits cost by the pages they write).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("billing.core.coalescer")
K = TypeVar("K", bound=Hashable)
In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[K, In, Out]):
    """Concurrent requests share round trips: ``run`` gets every queued request, keyed; equal keys
    share one answer. ``run`` returns an answer or an exception per key."""

    def __init__(
        self,
        run: Callable[[dict[K, In]], Awaitable[dict[K, Out | Exception]]],
        *,
        max_batch: int,
        name: str,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._name = name
        self._pending: dict[K, tuple[In, asyncio.Future[Out]]] = {}
        self._turn = asyncio.Lock()

    @property
    def queued(self) -> int:
        """Requests waiting for a round trip (not those of the round trip under way)."""
        return len(self._pending)

    async def submit(self, key: K, item: In) -> Out:
        entry = self._pending.get(key)
        if entry is None:
            future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
            # Mark an error as seen even when the request that asked has gone meanwhile.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            entry = self._pending[key] = (item, future)
        async with self._turn:
            while not entry[1].done():  # oldest first, at most max_batch per round trip
                keys = list(itertools.islice(self._pending, self._max_batch))
                batch = {key: self._pending.pop(key) for key in keys}
                # Shielded: a disconnecting client must not abort its neighbours' round trip.
                await asyncio.shield(self._flush(batch))
        return entry[1].result()

    async def _flush(self, batch: dict[K, tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            answers = await self._run({key: item for key, (item, _) in batch.items()})
        except Exception as exc:  # run() answers errors itself; this is the safety net
            log.error("round_trip_failed", coalescer=self._name, error_type=type(exc).__name__, exc_info=exc)
            answers = dict.fromkeys(batch, exc)
        for key, (_, future) in batch.items():
            answer = answers[key]
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
