"""Storage on receipt: the tenants' verification keys, and the insert-ignore of events.

Round trips are coalesced across concurrent deliveries: whoever holds the turn runs, in one round
trip, every request queued so far (one ``SELECT ... WHERE id IN`` for keys, one transaction for
events) and hands each waiting request its own answer. A request that arrives while a round trip
is in flight waits for the next one, nothing is acknowledged before its commit, and an idle server
runs a lone request at once, without waiting for company.

Keys are verified optimistically: a delivery may be checked against the keys last read, but the
transaction that stores it reads the tenant's keys again and stores only deliveries whose keys
are still current (``stale`` otherwise, and the receiver starts over with keys read afresh). So a
rotated secret applies at once, and a valid delivery costs one round trip, not two.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from billing.core.coalescer import Coalescer
from billing.core.crypto import SecretBox
from billing.core.db.engine import Database
from billing.core.db.inserts import insert_ignore
from billing.stripe_events.models import StripeEvent
from billing.tenants.models import Tenant

KEYS_CACHE_SIZE = 1024
EVENTS_PER_TRANSACTION = 100
NEW, DUPLICATE, STALE = "new", "duplicate", "stale"
log = structlog.get_logger("billing.stripe_events")
_TABLE = StripeEvent.__table__
_TENANTS = Tenant.__table__


class StorageFailed(Exception):
    """The delivery could not be stored (the database refused or is unreachable)."""


class KeysUnavailable(Exception):
    """The tenant's keys could not be read or decrypted."""


@dataclass(frozen=True)
class TenantKeys:
    tenant_id: str
    secrets: tuple[bytes, ...]
    livemode: bool
    payment_method_events: bool
    # What they were read from (the stored ciphertexts and the two settings): their version.
    version: tuple[tuple[str, ...], bool, bool]


# --- keys ------------------------------------------------------------------------------------------


def _keys_query(tenant_ids: list[str]) -> sa.Select[Any]:
    return sa.select(
        _TENANTS.c.id,
        _TENANTS.c.stripe_webhook_secrets_encrypted,
        _TENANTS.c.stripe_livemode,
        _TENANTS.c.stripe_payment_method_events,
    ).where(_TENANTS.c.id.in_(tenant_ids))


def _version(row: sa.Row[Any]) -> tuple[tuple[str, ...], bool, bool]:
    return (
        tuple(row.stripe_webhook_secrets_encrypted or ()),
        row.stripe_livemode,
        row.stripe_payment_method_events,
    )


class _Inbox:
    """One database's coalesced round trips and the tenants' keys last read from it."""

    def __init__(self, database: Database, box: SecretBox) -> None:
        self.database = database
        self.box = box
        self.keys = Coalescer(self._read_keys, max_batch=500, name="stripe_webhook_keys")
        self.events = Coalescer(
            self._write_events, max_batch=EVENTS_PER_TRANSACTION, name="stripe_webhook_events"
        )
        self.known: OrderedDict[str, TenantKeys] = OrderedDict()

    def remember(self, keys: TenantKeys) -> None:
        self.known[keys.tenant_id] = keys
        self.known.move_to_end(keys.tenant_id)
        if len(self.known) > KEYS_CACHE_SIZE:
            self.known.popitem(last=False)

    def _keys_from(self, row: sa.Row[Any]) -> TenantKeys:
        version = _version(row)
        cached = self.known.get(row.id)
        if cached is not None and cached.version == version:
            return cached  # decrypting is the expensive part: only when the ciphertexts changed
        secrets = tuple(self.box.decrypt(token).encode() for token in version[0])
        keys = TenantKeys(row.id, secrets, row.stripe_livemode, row.stripe_payment_method_events, version)
        self.remember(keys)
        return keys

    async def _read_keys(self, tenant_ids: dict[str, None]) -> dict[str, TenantKeys | Exception | None]:
        try:
            async with self.database.read() as session:
                rows = (await session.execute(_keys_query(list(tenant_ids)))).all()
        except Exception as exc:
            log.error("stripe_webhook_keys_unreadable", error_type=type(exc).__name__, exc_info=exc)
            raise KeysUnavailable(type(exc).__name__) from exc
        answers: dict[str, TenantKeys | Exception | None] = dict.fromkeys(tenant_ids)
        for gone in tenant_ids.keys() - {row.id for row in rows}:
            self.known.pop(gone, None)
        for row in rows:
            try:
                answers[row.id] = self._keys_from(row)
            except Exception as exc:  # a changed BILLING_SECRET_KEY: nothing verifies until fixed
                log.error("stripe_webhook_secrets_undecryptable", tenant_id=row.id, exc_info=exc)
                answers[row.id] = KeysUnavailable(type(exc).__name__)
        return answers

    async def _write_events(
        self, rows: dict[str, tuple[dict[str, Any], TenantKeys]]
    ) -> dict[str, str | Exception]:
        try:
            return await self._insert(rows)
        except Exception as exc:
            log.error(
                "stripe_event_store_failed", rows=len(rows), error_type=type(exc).__name__, exc_info=exc
            )
            return dict.fromkeys(rows, StorageFailed(type(exc).__name__))

    async def _insert(self, rows: dict[str, tuple[dict[str, Any], TenantKeys]]) -> dict[str, str | Exception]:
        tenant_ids = sorted({keys.tenant_id for _, keys in rows.values()})
        async with self.database.transaction() as session:
            # The keys each delivery was verified with must still be the tenant's: read them in the
            # transaction that inserts (FOR SHARE holds off a concurrent PATCH until we commit).
            query = _keys_query(tenant_ids).with_for_update(read=True)
            current = {row.id: _version(row) for row in (await session.execute(query)).all()}
            fresh = {
                row_id: row
                for row_id, (row, keys) in rows.items()
                if current.get(keys.tenant_id) == keys.version
            }
            inserted = await insert_ignore(session, _TABLE, list(fresh.values()), returning=[_TABLE.c.id])
        ids = {item.id for item in inserted}
        answers: dict[str, str | Exception] = {}
        for row_id, (_, keys) in rows.items():
            if row_id not in fresh:
                self.known.pop(keys.tenant_id, None)
                answers[row_id] = STALE
            else:
                answers[row_id] = NEW if row_id in ids else DUPLICATE
        return answers


_per_database: weakref.WeakKeyDictionary[Database, _Inbox] = weakref.WeakKeyDictionary()


def _inbox(database: Database, box: SecretBox) -> _Inbox:
    found = _per_database.get(database)
    if found is None:
        found = _per_database[database] = _Inbox(database, box)
    return found


def cached_keys(database: Database, box: SecretBox, tenant_id: str) -> TenantKeys | None:
    """The tenant's keys as last read, without a round trip (they may be stale: see :func:`store`)."""
    return _inbox(database, box).known.get(tenant_id)


async def tenant_keys(database: Database, box: SecretBox, tenant_id: str) -> TenantKeys | None:
    """The tenant's webhook secrets and settings as of now; None for a tenant that does not exist.

    Raises :class:`KeysUnavailable` when they cannot be read or decrypted.
    """
    return await _inbox(database, box).keys.submit(tenant_id, None)


async def store(database: Database, box: SecretBox, row: dict[str, Any], keys: TenantKeys) -> str:
    """Insert the event unless (tenant, Stripe event id) is already stored: ``new`` or ``duplicate``;
    ``stale`` (nothing written) when the tenant's keys are no longer ``keys``.

    Raises :class:`StorageFailed` when it could not be stored.
    """
    return await _inbox(database, box).events.submit(row["id"], (row, keys))
