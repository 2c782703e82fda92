"""Idempotency-Key on POST and PATCH under /v1: replays, reuse, keys in use, what is kept, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from sqlalchemy import exc as sa_exc

from billing.app import build_app, use_context
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.settings import Settings
from billing.customers import service as customers_service
from billing.customers.models import Customer
from billing.jobs import Run, run_jobs
from billing.web.auth import Scope
from billing.web.idempotency import request_hash
from billing.web.idempotency_keys import ABANDONED_AFTER, Fingerprint, IdempotencyKey, claim
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

ACME = {"external_id": "acme-42", "name": "Acme", "email": "billing@acme.example"}


def keyed(tenant: TenantHandle, key: str, scope: Scope = Scope.ADMIN) -> dict[str, str]:
    return tenant.headers(scope) | {"Idempotency-Key": key}


async def customer_count(ctx: AppContext) -> int:
    async with ctx.database.read() as session:
        return (await session.execute(sa.select(sa.func.count()).select_from(Customer))).scalar_one()


async def test_a_retried_create_is_replayed_and_creates_nothing_twice(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    first = await client.post("/v1/customers", headers=keyed(tenant, "create-acme"), json=ACME)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    again = await client.post("/v1/customers", headers=keyed(tenant, "create-acme"), json=ACME)

    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await customer_count(ctx) == 1
    # Without the key the same request runs, and conflicts with the customer it created.
    unkeyed = await client.post("/v1/customers", headers=tenant.headers(), json=ACME)
    assert_problem(unkeyed, 409, "conflict")


async def test_the_body_is_compared_as_json_not_as_text(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    first = await client.post(
        "/v1/customers",
        headers=keyed(tenant, "k") | {"Content-Type": "application/json"},
        content=b'{"external_id": "acme-42", "name": "Acme", "email": "billing@acme.example"}',
    )
    reordered = b'{\n  "email":"billing@acme.example",  "name":"Acme","external_id":"acme-42"}'
    again = await client.post(
        "/v1/customers", headers=keyed(tenant, "k") | {"Content-Type": "application/json"}, content=reordered
    )
    assert first.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_a_key_used_with_another_body_or_path_is_refused(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    assert (await client.post("/v1/customers", headers=keyed(tenant, "k1"), json=ACME)).status_code == 201

    other_body = await client.post(
        "/v1/customers", headers=keyed(tenant, "k1"), json=ACME | {"name": "Other"}
    )
    other_path = await client.post("/v1/meters", headers=keyed(tenant, "k1"), json=ACME)
    other_query = await client.post("/v1/customers?x=1", headers=keyed(tenant, "k1"), json=ACME)

    for response in (other_body, other_path, other_query):
        assert_problem(response, 409, "idempotency_key_reused")
    assert await customer_count(ctx) == 1


async def test_the_same_key_of_two_tenants_names_two_requests(
    client: httpx.AsyncClient, make_tenant, ctx: AppContext
) -> None:
    acme, globex = await make_tenant("Acme"), await make_tenant("Globex")

    first = await client.post("/v1/customers", headers=keyed(acme, "shared"), json=ACME)
    second = await client.post("/v1/customers", headers=keyed(globex, "shared"), json=ACME | {"name": "G"})

    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"] and second.json()["name"] == "G"
    assert await customer_count(ctx) == 2


async def test_a_refused_request_leaves_the_key_usable(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    invalid = await client.post("/v1/customers", headers=keyed(tenant, "fix-me"), json={"external_id": ""})
    assert invalid.status_code == 422
    forbidden = await client.post("/v1/customers", headers=keyed(tenant, "fix-me", Scope.FINANCE), json=ACME)
    assert forbidden.status_code == 403

    corrected = await client.post("/v1/customers", headers=keyed(tenant, "fix-me"), json=ACME)

    assert corrected.status_code == 201, corrected.text
    assert "idempotent-replayed" not in corrected.headers
    assert await customer_count(ctx) == 1


async def test_a_not_found_is_kept_and_replayed(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    missing = await client.patch("/v1/customers/acme-42", headers=keyed(tenant, "p"), json={"name": "New"})
    assert_problem(missing, 404, "not_found")
    assert (await client.post("/v1/customers", headers=tenant.headers(), json=ACME)).status_code == 201

    again = await client.patch("/v1/customers/acme-42", headers=keyed(tenant, "p"), json={"name": "New"})

    assert again.status_code == 404 and again.content == missing.content
    assert again.headers["idempotent-replayed"] == "true"
    fetched = await client.get("/v1/customers/acme-42", headers=tenant.headers())
    assert fetched.json()["name"] == "Acme"


async def test_a_patch_is_replayed_with_its_first_answer(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    assert (await client.post("/v1/customers", headers=tenant.headers(), json=ACME)).status_code == 201
    first = await client.patch("/v1/customers/acme-42", headers=keyed(tenant, "rename"), json={"name": "One"})
    assert first.status_code == 200 and first.json()["name"] == "One"
    renamed = await client.patch("/v1/customers/acme-42", headers=tenant.headers(), json={"name": "Two"})
    assert renamed.status_code == 200

    again = await client.patch("/v1/customers/acme-42", headers=keyed(tenant, "rename"), json={"name": "One"})

    assert again.headers["idempotent-replayed"] == "true" and again.json()["name"] == "One"
    fetched = await client.get("/v1/customers/acme-42", headers=tenant.headers())
    assert fetched.json()["name"] == "Two"


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "tab\there", "caf\u00e9"], ids=["empty", "256", "tab", "non-ascii"]
)
async def test_a_malformed_key_is_refused_and_nothing_runs(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, key: str
) -> None:
    headers = [
        (b"authorization", tenant.headers()["Authorization"].encode()),
        (b"idempotency-key", key.encode()),
    ]
    response = await client.post("/v1/customers", headers=headers, json=ACME)
    assert_problem(response, 400, "invalid_idempotency_key")
    assert await customer_count(ctx) == 0


async def test_keys_of_255_printable_characters_are_accepted(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    key = ("abc ~!{}" * 40)[:255]
    response = await client.post("/v1/customers", headers=keyed(tenant, key), json=ACME)
    assert response.status_code == 201, response.text


async def test_get_ignores_the_header(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    response = await client.get("/v1/customers", headers=keyed(tenant, ""))
    assert response.status_code == 200


async def test_a_key_whose_request_still_runs_is_in_use(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    running = Fingerprint("POST", "/v1/customers", request_hash(b'{"external_id":"acme-42"}'))
    await claim(ctx, tenant.id, "busy", running)

    response = await client.post(
        "/v1/customers", headers=keyed(tenant, "busy"), json={"external_id": "acme-42"}
    )

    assert_problem(response, 409, "idempotency_key_in_use")
    assert await customer_count(ctx) == 0


async def test_a_request_abandoned_by_a_dead_process_is_taken_over_by_its_retry(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    body = {"external_id": "acme-42"}
    await claim(
        ctx,
        tenant.id,
        "crashed",
        Fingerprint("POST", "/v1/customers", request_hash(b'{"external_id":"acme-42"}')),
    )
    clock.advance(ABANDONED_AFTER - timedelta(seconds=1))
    assert_problem(
        await client.post("/v1/customers", headers=keyed(tenant, "crashed"), json=body),
        409,
        "idempotency_key_in_use",
    )

    clock.advance(timedelta(seconds=1))
    other = await client.post("/v1/customers", headers=keyed(tenant, "crashed"), json={"external_id": "x"})
    assert_problem(other, 409, "idempotency_key_reused")
    retried = await client.post("/v1/customers", headers=keyed(tenant, "crashed"), json=body)
    assert retried.status_code == 201, retried.text


async def test_simultaneous_requests_with_one_key_run_once(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/customers", headers=keyed(tenant, "race"), json=ACME) for _ in range(8))
    )

    ran = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(ran) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_key_in_use"
        else:
            assert response.status_code == 201 and response.json() == ran[0].json()
    assert await customer_count(ctx) == 1


@pytest.fixture
async def replica(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second app instance on the same database, with its own engines and pools."""
    second: Litestar = build_app(max_body_bytes=settings.max_body_bytes, scheduler=False)
    use_context(second, AppContext.create(settings, clock=clock))
    transport = httpx.ASGITransport(app=second)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as replica_client:
        yield replica_client
    await second.state.ctx.close()


async def test_a_key_holds_across_replicas(
    client: httpx.AsyncClient, replica: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    first = await client.post("/v1/customers", headers=keyed(tenant, "everywhere"), json=ACME)
    again = await replica.post("/v1/customers", headers=keyed(tenant, "everywhere"), json=ACME)
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content

    raced = await asyncio.gather(
        *(
            instance.post("/v1/customers", headers=keyed(tenant, "race"), json=ACME | {"external_id": "r"})
            for instance in (client, replica, client, replica)
        )
    )
    assert sum(1 for r in raced if r.status_code == 201 and "idempotent-replayed" not in r.headers) == 1
    assert {r.status_code for r in raced} <= {201, 409}
    assert await customer_count(ctx) == 2


async def test_a_key_is_fresh_again_after_24_hours(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    assert (await client.post("/v1/customers", headers=keyed(tenant, "daily"), json=ACME)).status_code == 201
    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    replay = await client.post("/v1/customers", headers=keyed(tenant, "daily"), json=ACME)
    assert replay.headers["idempotent-replayed"] == "true"

    clock.advance(timedelta(seconds=1))
    fresh = await client.post(
        "/v1/customers", headers=keyed(tenant, "daily"), json=ACME | {"external_id": "b"}
    )

    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
    assert await customer_count(ctx) == 2


async def test_expired_keys_are_purged_by_the_jobs(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    for key in ("old-1", "old-2"):
        body = ACME | {"external_id": key}
        assert (await client.post("/v1/customers", headers=keyed(tenant, key), json=body)).status_code == 201
    clock.advance(timedelta(hours=23))
    assert (await client.post("/v1/customers", headers=keyed(tenant, "new"), json=ACME)).status_code == 201

    done = await run_jobs(ctx, Run(at=clock.now() + timedelta(hours=1)))

    assert done["idempotency_keys"] == 2
    async with ctx.database.read() as session:
        kept = (await session.execute(sa.select(IdempotencyKey.key))).scalars().all()
    assert kept == ["new"]


async def test_events_dedupe_per_event_under_any_key(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    event = {
        "id": "e-1",
        "customer": "acme-1",
        "meter": "api_calls",
        "timestamp": "2026-11-21T11:00:00Z",
        "value": "2",
    }
    ingest = metered.headers(Scope.INGEST)

    first = await client.post("/v1/events", headers=ingest | {"Idempotency-Key": "a"}, json=event)
    replay = await client.post("/v1/events", headers=ingest | {"Idempotency-Key": "a"}, json=event)
    other_key = await client.post("/v1/events", headers=ingest | {"Idempotency-Key": "b"}, json=event)

    assert first.status_code == 202 and first.json()["accepted"] == 1
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    assert other_key.json()["duplicates"] == 1 and other_key.json()["accepted"] == 0


def failing_create(error: Exception) -> object:
    async def create_customer(*_args: object, **_kwargs: object) -> None:
        raise error

    return create_customer


async def test_a_server_error_is_kept_once_the_request_ran(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(customers_service, "create_customer", failing_create(RuntimeError("boom")))
        failed = await client.post("/v1/customers", headers=keyed(tenant, "k"), json=ACME)
    assert_problem(failed, 500, "internal_error")

    again = await client.post("/v1/customers", headers=keyed(tenant, "k"), json=ACME)

    assert again.status_code == 500 and again.content == failed.content
    assert again.headers["idempotent-replayed"] == "true"
    assert await customer_count(ctx) == 0


async def test_an_unavailable_database_is_not_kept(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(customers_service, "create_customer", failing_create(sa_exc.TimeoutError("pool")))
        unavailable = await client.post("/v1/customers", headers=keyed(tenant, "k"), json=ACME)
    assert_problem(unavailable, 503, "database_unavailable")

    retried = await client.post("/v1/customers", headers=keyed(tenant, "k"), json=ACME)

    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert await customer_count(ctx) == 1


async def test_the_schema_documents_the_header_on_writes_only(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]

    def documented(method: str, path: str) -> bool:
        return "Idempotency-Key" in [p["name"] for p in paths[path][method].get("parameters", [])]

    assert documented("post", "/v1/customers") and documented("patch", "/v1/customers/{customer_id}")
    assert documented("post", "/v1/events")
    assert not documented("get", "/v1/customers")
