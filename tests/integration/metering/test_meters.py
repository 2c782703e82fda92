"""/v1/meters: what usage is counted and how; one meter per key and tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.metering.meters import meters_by_key
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.customers.test_customers import count_queries, field_errors
from tests.integration.web.test_auth import assert_problem

METER = {"key": "api_calls", "name": "API calls", "aggregation": "sum", "unit": "call"}
OUTPUT_FIELDS = {
    "id",
    "object",
    "key",
    "name",
    "aggregation",
    "unique_property",
    "unit",
    "group_by",
    "allow_negative",
    "created_at",
}


async def create(client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any) -> httpx.Response:
    body = {k: v for k, v in {**METER, **fields}.items() if v is not ...}
    return await client.post("/v1/meters", headers=tenant.headers(), json=body)


async def get(client: httpx.AsyncClient, tenant: TenantHandle, ref: str) -> httpx.Response:
    return await client.get(f"/v1/meters/{ref}", headers=tenant.headers())


async def test_create_answers_201_with_the_meter(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    response = await create(client, tenant)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == OUTPUT_FIELDS
    assert body["id"].startswith("mtr_")
    assert body["object"] == "meter"
    assert {k: body[k] for k in METER} == METER
    assert body["unique_property"] is None
    assert body["group_by"] == [] and body["allow_negative"] is False
    assert body["created_at"] == "2026-11-21T12:00:00Z"


@pytest.mark.parametrize("aggregation", ["sum", "count", "max", "latest"])
async def test_every_aggregation_without_a_property_is_accepted(
    client: httpx.AsyncClient, tenant: TenantHandle, aggregation: str
) -> None:
    response = await create(client, tenant, aggregation=aggregation)

    assert response.status_code == 201, response.text
    assert response.json()["aggregation"] == aggregation


async def test_a_unique_count_meter_counts_the_named_property(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    response = await create(
        client, tenant, key="active_users", aggregation="unique_count", unique_property="user_id", unit=None
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["aggregation"] == "unique_count"
    assert body["unique_property"] == "user_id"
    assert body["unit"] is None


async def test_the_name_defaults_to_the_key(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    body = (await create(client, tenant, name=..., unit=...)).json()

    assert body["name"] == "api_calls"
    assert body["unit"] is None


async def test_a_meter_is_found_by_id_and_by_key(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    created = (await create(client, tenant)).json()

    by_id = await get(client, tenant, created["id"])
    by_key = await get(client, tenant, "api_calls")

    assert by_id.status_code == by_key.status_code == 200
    assert by_id.json() == by_key.json() == created


async def test_a_reused_key_answers_409_and_keeps_the_first_meter(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    first = (await create(client, tenant)).json()

    again = await create(client, tenant, name="Other", aggregation="unique_count", unique_property="user_id")

    assert_problem(again, 409, "conflict")
    assert (await get(client, tenant, "api_calls")).json() == first
    listed = (await client.get("/v1/meters", headers=tenant.headers())).json()
    assert [m["id"] for m in listed["data"]] == [first["id"]]


async def test_two_tenants_may_use_the_same_key(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    other = await make_tenant(name="Other")

    mine = await create(client, tenant)
    theirs = await create(client, other)

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


async def test_another_tenants_meter_answers_404_by_id_and_by_key(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    owner = await make_tenant(name="Owner")
    theirs = (await create(client, owner, key="their_meter")).json()

    for ref in (theirs["id"], "their_meter"):
        assert_problem(await get(client, tenant, ref), 404, "not_found")
        patched = await client.patch(f"/v1/meters/{ref}", headers=tenant.headers(), json={"name": "Mine"})
        assert_problem(patched, 404, "not_found")
    assert (await get(client, owner, "their_meter")).json() == theirs


@pytest.mark.parametrize("ref", ["mtr_doesnotexist00000000000000", "no_such_meter"])
async def test_a_missing_meter_answers_404(client: httpx.AsyncClient, tenant: TenantHandle, ref: str) -> None:
    assert_problem(await get(client, tenant, ref), 404, "not_found")


async def test_patch_renames_and_changes_the_unit_only(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    created = (await create(client, tenant)).json()
    clock.advance(timedelta(hours=1))

    response = await client.patch(
        "/v1/meters/api_calls", headers=tenant.headers(), json={"name": "Requests", "unit": "request"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {**created, "name": "Requests", "unit": "request"}
    assert (await get(client, tenant, created["id"])).json() == body
    cleared = await client.patch(f"/v1/meters/{created['id']}", headers=tenant.headers(), json={"unit": None})
    assert cleared.json() == {**body, "unit": None}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"aggregation": "unique_count"}, "unique_property"),
        ({"aggregation": "unique_count", "unique_property": ""}, "unique_property"),
        ({"aggregation": "sum", "unique_property": "user_id"}, "unique_property"),
        ({"aggregation": "latest", "unique_property": "user_id"}, "unique_property"),
        ({"aggregation": "avg"}, "aggregation"),
        ({"aggregation": "SUM"}, "aggregation"),
        ({"aggregation": ...}, "aggregation"),
        ({"key": ""}, "key"),
        ({"key": "API_calls"}, "key"),
        ({"key": ".calls"}, "key"),
        ({"key": "-calls"}, "key"),
        ({"key": "api calls"}, "key"),
        ({"key": "api/calls"}, "key"),
        ({"key": "zählung"}, "key"),
        ({"key": "a" * 65}, "key"),
        ({"key": "calls\n"}, "key"),
        ({"key": ...}, "key"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"unit": "u" * 65}, "unit"),
        ({"filter": {"region": "eu"}}, "filter"),
    ],
)
async def test_an_invalid_create_answers_422_naming_the_field_and_creates_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, fields: dict, field: str
) -> None:
    response = await create(client, tenant, **fields)

    body = assert_problem(response, 422, "validation_error")
    assert field in field_errors(body)
    assert (await client.get("/v1/meters", headers=tenant.headers())).json()["data"] == []


@pytest.mark.parametrize("key", ["a", "_", "0", "api_calls", "storage.gb-hours", "a" * 64, "mtr_lookalike"])
async def test_keys_of_the_documented_form_are_accepted(
    client: httpx.AsyncClient, tenant: TenantHandle, key: str
) -> None:
    response = await create(client, tenant, key=key)

    assert response.status_code == 201, response.text
    assert (await get(client, tenant, key)).json()["key"] == key


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"key": "renamed"}, "key"),
        ({"aggregation": "max"}, "aggregation"),
        ({"unique_property": "user_id"}, "unique_property"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"unit": "u" * 65}, "unit"),
    ],
)
async def test_an_invalid_patch_answers_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, patch: dict, field: str
) -> None:
    created = (await create(client, tenant)).json()

    response = await client.patch(
        "/v1/meters/api_calls", headers=tenant.headers(), json={"unit": "x", **patch}
    )

    body = assert_problem(response, 422, "validation_error")
    assert field in field_errors(body)
    assert (await get(client, tenant, "api_calls")).json() == created


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("content", [b"{", b"{'key': 'x'}", b"\xff\xfe", b"[1, 2"])
async def test_malformed_json_answers_400(
    client: httpx.AsyncClient, tenant: TenantHandle, method: str, content: bytes
) -> None:
    await create(client, tenant)
    path = "/v1/meters" if method == "POST" else "/v1/meters/api_calls"
    headers = {**tenant.headers(), "content-type": "application/json"}

    response = await client.request(method, path, headers=headers, content=content)

    assert_problem(response, 400, "malformed_json")


async def test_list_pages_newest_first_with_starting_after(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = [(await create(client, tenant, key=f"meter_{i}")).json()["id"] for i in range(5)]

    first = (await client.get("/v1/meters?limit=3", headers=tenant.headers())).json()
    rest = (
        await client.get(
            f"/v1/meters?limit=3&starting_after={first['data'][-1]['id']}", headers=tenant.headers()
        )
    ).json()

    assert first["has_more"] is True and rest["has_more"] is False
    assert [m["id"] for m in first["data"] + rest["data"]] == list(reversed(created))
    assert all(set(m) == OUTPUT_FIELDS for m in first["data"])


@pytest.mark.parametrize("limit", ["0", "101", "abc"])
async def test_a_limit_out_of_range_answers_422(
    client: httpx.AsyncClient, tenant: TenantHandle, limit: str
) -> None:
    assert_problem(
        await client.get(f"/v1/meters?limit={limit}", headers=tenant.headers()), 422, "validation_error"
    )


ROUTES = [
    ("GET", "/v1/meters", None),
    ("GET", "/v1/meters/api_calls", None),
    ("POST", "/v1/meters", {"key": "new_meter", "aggregation": "count"}),
    ("PATCH", "/v1/meters/api_calls", {"name": "Renamed"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("scope", list(Scope))
async def test_admin_writes_finance_reads_ingest_gets_403(
    client: httpx.AsyncClient, tenant: TenantHandle, scope: Scope, method: str, path: str, body: Any
) -> None:
    await create(client, tenant)
    allowed = scope is Scope.ADMIN or (scope is Scope.FINANCE and method == "GET")

    response = await client.request(method, path, headers=tenant.headers(scope), json=body)

    if allowed:
        assert response.status_code in (200, 201), response.text
    else:
        assert_problem(response, 403, "forbidden")


async def test_a_forbidden_write_changes_nothing(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    created = (await create(client, tenant)).json()

    for scope in (Scope.FINANCE, Scope.INGEST):
        patched = await client.patch(
            "/v1/meters/api_calls", headers=tenant.headers(scope), json={"name": "X"}
        )
        posted = await client.post(
            "/v1/meters", headers=tenant.headers(scope), json={"key": "x", "aggregation": "sum"}
        )
        assert patched.status_code == posted.status_code == 403

    assert (await client.get("/v1/meters", headers=tenant.headers())).json()["data"] == [created]


@pytest.mark.postgres_only
async def test_concurrent_creates_of_one_key_make_exactly_one_meter(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    responses = await asyncio.gather(*(create(client, tenant, name=f"racer {i}") for i in range(20)))

    assert sorted(r.status_code for r in responses) == [201] + [409] * 19
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert (await client.get("/v1/meters", headers=tenant.headers())).json()["data"] == [winner]


async def test_meters_by_key_finds_the_tenants_meters_in_one_query(
    client: httpx.AsyncClient,
    ctx: AppContext,
    tenant: TenantHandle,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
) -> None:
    calls = (await create(client, tenant, key="calls")).json()
    storage = (await create(client, tenant, key="storage")).json()
    other = await make_tenant(name="Other")
    await create(client, other, key="foreign")

    async with ctx.database.read() as session:
        with count_queries(ctx) as statements:
            found = await meters_by_key(
                session, tenant.id, {"calls", "storage", "foreign", "missing", calls["id"]}
            )
        empty = await meters_by_key(session, tenant.id, set())

    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert {key: meter.id for key, meter in found.items()} == {"calls": calls["id"], "storage": storage["id"]}
    assert empty == {}
