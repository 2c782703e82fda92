"""/v1/customers: create, address by id or external_id, update, list; one customer per external_id."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.customers.service import customers_by_reference
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

CUSTOMER = {
    "external_id": "acme-42",
    "email": "billing@acme.example",
    "name": "Acme Inc.",
    "currency": "USD",
    "timezone": "Europe/Berlin",
    "provider_customer_id": "cus_StripeAbc123",
    "default_payment_method": "pm_card_visa",
    "metadata": {"plan": "pro", "region": "eu"},
}
OUTPUT_FIELDS = {
    "id",
    "object",
    "external_id",
    "email",
    "name",
    "currency",
    "timezone",
    "locale",
    "provider_customer_id",
    "default_payment_method",
    "card",
    "metadata",
    "payment_status",
    "archived_at",
    "net_terms_days",
    "address",
    "tax_exempt",
    "tax_ids",
    "tax_rates",
    "credit_balance_low_threshold",
    "dunning",
    "created_at",
    "updated_at",
}


async def create(client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any) -> httpx.Response:
    return await client.post("/v1/customers", headers=tenant.headers(), json={**CUSTOMER, **fields})


async def get(client: httpx.AsyncClient, tenant: TenantHandle, ref: str) -> httpx.Response:
    return await client.get(f"/v1/customers/{ref}", headers=tenant.headers())


def field_errors(body: dict) -> str:
    """Every field name and message of a problem, to look for the one that should be named."""
    return " ".join(f"{e['field']} {e['message']}" for e in body["errors"])


async def test_create_answers_201_with_the_customer(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    response = await create(client, tenant)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == OUTPUT_FIELDS
    assert body["id"].startswith("cus_")
    assert body["object"] == "customer"
    assert {k: body[k] for k in CUSTOMER} == CUSTOMER
    assert body["locale"] == "en"
    assert body["payment_status"] == "ok"
    assert body["dunning"] is None
    assert body["created_at"] == body["updated_at"] == "2026-11-21T12:00:00Z"


async def test_a_customer_is_found_by_id_and_by_external_id(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = (await create(client, tenant)).json()

    by_id = await get(client, tenant, created["id"])
    by_external_id = await get(client, tenant, "acme-42")

    assert by_id.status_code == by_external_id.status_code == 200
    assert by_id.json() == by_external_id.json() == created


async def test_an_external_id_that_needs_escaping_is_addressable(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = (await create(client, tenant, external_id="user 42?x=1#frag&é")).json()

    response = await get(client, tenant, "user%2042%3Fx%3D1%23frag%26%C3%A9")

    assert response.status_code == 200, response.text
    assert response.json()["id"] == created["id"]


async def test_the_id_wins_when_an_external_id_equals_another_customers_id(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    first = (await create(client, tenant, external_id="first")).json()
    second = (await create(client, tenant, external_id=first["id"])).json()

    assert (await get(client, tenant, first["id"])).json()["id"] == first["id"]
    assert (await get(client, tenant, second["id"])).json()["id"] == second["id"]


async def test_minimal_create_takes_the_tenants_currency_and_leaves_the_rest_empty(
    client: httpx.AsyncClient, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    euro_tenant = await make_tenant(name="Euro GmbH", currency="EUR")

    response = await client.post("/v1/customers", headers=euro_tenant.headers(), json={"external_id": "x"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["currency"] == "EUR"
    assert body["timezone"] is None  # the tenant's billing_timezone applies
    assert body["locale"] == "en"
    assert body["metadata"] == {}
    assert body["email"] is body["name"] is body["provider_customer_id"] is None


async def test_email_and_locale_are_normalised(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    body = (await create(client, tenant, email="Billing@ACME.Example", locale="de-de")).json()

    assert body["email"] == "Billing@acme.example"
    assert body["locale"] == "de_DE"


async def test_a_reused_external_id_answers_409_and_keeps_the_first_customer(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    first = (await create(client, tenant)).json()

    again = await create(client, tenant, email="other@example.com", name="Impostor", currency="EUR")

    assert_problem(again, 409, "conflict")
    assert (await get(client, tenant, "acme-42")).json() == first
    listed = (await client.get("/v1/customers", headers=tenant.headers())).json()
    assert [c["id"] for c in listed["data"]] == [first["id"]]


async def test_two_tenants_may_use_the_same_external_id(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    other = await make_tenant(name="Other")

    mine = await create(client, tenant)
    theirs = await create(client, other)

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


async def test_another_tenants_customer_answers_404_by_id_and_by_external_id(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    owner = await make_tenant(name="Owner")
    theirs = (await create(client, owner, external_id="their-customer")).json()

    for ref in (theirs["id"], "their-customer"):
        assert_problem(await get(client, tenant, ref), 404, "not_found")
        patched = await client.patch(f"/v1/customers/{ref}", headers=tenant.headers(), json={"name": "Mine"})
        assert_problem(patched, 404, "not_found")
    filtered = await client.get("/v1/customers?external_id=their-customer", headers=tenant.headers())
    assert filtered.json() == {"data": [], "has_more": False}
    assert (await get(client, owner, "their-customer")).json() == theirs


@pytest.mark.parametrize("ref", ["cus_doesnotexist00000000000000", "no-such-customer"])
async def test_a_missing_customer_answers_404(
    client: httpx.AsyncClient, tenant: TenantHandle, ref: str
) -> None:
    assert_problem(await get(client, tenant, ref), 404, "not_found")


async def test_patch_changes_the_given_fields_and_replaces_metadata(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    created = (await create(client, tenant)).json()
    clock.advance(timedelta(hours=1))
    patch = {
        "email": "ap@acme.example",
        "name": "Acme Corporation",
        "timezone": "Asia/Kathmandu",
        "locale": "fr",
        "provider_customer_id": "cus_StripeXyz789",
        "default_payment_method": "pm_card_mastercard",
        "metadata": {"tier": "gold"},
    }

    response = await client.patch("/v1/customers/acme-42", headers=tenant.headers(), json=patch)

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in patch} == patch
    assert body["updated_at"] == "2026-11-21T13:00:00Z"
    unchanged = OUTPUT_FIELDS - set(patch) - {"updated_at"}
    assert {k: body[k] for k in unchanged} == {k: created[k] for k in unchanged}
    assert (await get(client, tenant, created["id"])).json() == body


async def test_patch_with_null_clears_optional_fields(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = (await create(client, tenant)).json()
    cleared = ["email", "name", "timezone", "provider_customer_id", "default_payment_method", "metadata"]

    response = await client.patch(
        f"/v1/customers/{created['id']}", headers=tenant.headers(), json=dict.fromkeys(cleared)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"] == {}
    assert all(body[k] is None for k in cleared if k != "metadata")
    assert body["external_id"] == "acme-42" and body["currency"] == "USD"


async def test_an_empty_patch_changes_nothing_but_answers_the_customer(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = (await create(client, tenant)).json()

    response = await client.patch("/v1/customers/acme-42", headers=tenant.headers(), json={})

    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "utc"}, "timezone"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b@c.example"}, "email"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"external_id": "x" * 129}, "external_id"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": " padded "}, "external_id"),
        ({"external_id": "a/b"}, "external_id"),
        ({"external_id": 42}, "external_id"),
        ({"locale": "xx-Nope"}, "locale"),
        ({"name": "x" * 201}, "name"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"metadata": {"k" * 41: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata.k"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"provider_customer_id": "x" * 256}, "provider_customer_id"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_an_invalid_create_answers_422_naming_the_field_and_creates_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, fields: dict, field: str
) -> None:
    response = await create(client, tenant, **fields)

    body = assert_problem(response, 422, "validation_error")
    assert field in field_errors(body)
    assert (await client.get("/v1/customers", headers=tenant.headers())).json()["data"] == []


async def test_metadata_at_the_limits_is_accepted(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    metadata = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(50)}

    response = await create(client, tenant, metadata=metadata)

    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"external_id": "renamed"}, "external_id"),
        ({"currency": "eur"}, "currency"),
        ({"currency": None}, "currency"),
        ({"payment_status": "delinquent"}, "payment_status"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"email": "nope"}, "email"),
        ({"locale": None}, "locale"),
        ({"metadata": {"k": "v" * 501}}, "metadata.k"),
    ],
)
async def test_an_invalid_patch_answers_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, patch: dict, field: str
) -> None:
    created = (await create(client, tenant)).json()

    # A valid change beside the invalid one must not be applied either.
    response = await client.patch(
        "/v1/customers/acme-42", headers=tenant.headers(), json={"name": "Changed", **patch}
    )

    body = assert_problem(response, 422, "validation_error")
    assert field in field_errors(body)
    assert (await get(client, tenant, "acme-42")).json() == created


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("content", [b"{", b"{'external_id': 1}", b"\xff\xfe", b'{"external_id": "a",}'])
async def test_malformed_json_answers_400(
    client: httpx.AsyncClient, tenant: TenantHandle, method: str, content: bytes
) -> None:
    await create(client, tenant)
    path = "/v1/customers" if method == "POST" else "/v1/customers/acme-42"
    headers = {**tenant.headers(), "content-type": "application/json"}

    response = await client.request(method, path, headers=headers, content=content)

    assert_problem(response, 400, "malformed_json")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("content", [None, b""], ids=["no body", "empty body"])
async def test_a_missing_body_answers_422_saying_so(
    client: httpx.AsyncClient, tenant: TenantHandle, method: str, content: bytes | None
) -> None:
    await create(client, tenant)
    path = "/v1/customers" if method == "POST" else "/v1/customers/acme-42"

    response = await client.request(method, path, headers=tenant.headers(), content=content)

    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "body: a JSON body is required"
    assert body["errors"] == [{"field": "body", "message": "a JSON body is required"}]


async def test_list_pages_newest_first_with_starting_after(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = [(await create(client, tenant, external_id=f"c-{i}")).json()["id"] for i in range(5)]

    first = (await client.get("/v1/customers?limit=2", headers=tenant.headers())).json()
    second = (
        await client.get(
            f"/v1/customers?limit=2&starting_after={first['data'][-1]['id']}", headers=tenant.headers()
        )
    ).json()
    last = (
        await client.get(
            f"/v1/customers?limit=2&starting_after={second['data'][-1]['id']}", headers=tenant.headers()
        )
    ).json()

    assert first["has_more"] is second["has_more"] is True
    assert last["has_more"] is False
    ids = [c["id"] for page in (first, second, last) for c in page["data"]]
    assert ids == list(reversed(created))
    assert all(set(c) == OUTPUT_FIELDS for c in first["data"])
    default = (await client.get("/v1/customers", headers=tenant.headers())).json()
    assert len(default["data"]) == 5 and default["has_more"] is False


async def test_list_filters_by_email_and_by_external_id(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    a = (await create(client, tenant, external_id="a", email="shared@example.com")).json()
    b = (await create(client, tenant, external_id="b", email="shared@example.com")).json()
    c = (await create(client, tenant, external_id="c", email="other@example.com")).json()

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/v1/customers?{query}", headers=tenant.headers())
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert await ids("email=shared@example.com") == [b["id"], a["id"]]
    assert await ids("email=shared@EXAMPLE.com") == [b["id"], a["id"]]
    assert await ids("external_id=c") == [c["id"]]
    assert await ids("external_id=c&email=shared@example.com") == []
    assert await ids("external_id=nobody") == []
    assert_problem(
        await client.get("/v1/customers?email=nope", headers=tenant.headers()), 422, "validation_error"
    )


@pytest.mark.parametrize("limit", ["0", "101", "abc"])
async def test_a_limit_out_of_range_answers_422(
    client: httpx.AsyncClient, tenant: TenantHandle, limit: str
) -> None:
    response = await client.get(f"/v1/customers?limit={limit}", headers=tenant.headers())
    assert_problem(response, 422, "validation_error")


ROUTES = [
    ("GET", "/v1/customers", None),
    ("GET", "/v1/customers/acme-42", None),
    ("POST", "/v1/customers", {"external_id": "new"}),
    ("PATCH", "/v1/customers/acme-42", {"name": "Renamed"}),
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
            "/v1/customers/acme-42", headers=tenant.headers(scope), json={"name": "Hijacked"}
        )
        posted = await client.post("/v1/customers", headers=tenant.headers(scope), json={"external_id": "x"})
        assert patched.status_code == posted.status_code == 403

    listed = (await client.get("/v1/customers", headers=tenant.headers())).json()
    assert listed["data"] == [created]


@pytest.mark.postgres_only
async def test_concurrent_creates_of_one_external_id_make_exactly_one_customer(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    responses = await asyncio.gather(*(create(client, tenant, name=f"racer {i}") for i in range(20)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses if r.status_code not in (201, 409)]
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert all(r.json()["code"] == "conflict" for r in responses if r.status_code == 409)
    listed = (await client.get("/v1/customers", headers=tenant.headers())).json()
    assert [c["id"] for c in listed["data"]] == [winner["id"]]
    assert (await get(client, tenant, "acme-42")).json() == winner


# --- the lookup that ingestion uses ------------------------------------------------------------


@contextmanager
def count_queries(ctx: AppContext) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = ctx.database.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def test_customers_by_reference_maps_ids_and_external_ids_in_one_query(
    client: httpx.AsyncClient,
    ctx: AppContext,
    tenant: TenantHandle,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
) -> None:
    a = (await create(client, tenant, external_id="a")).json()
    b = (await create(client, tenant, external_id="b")).json()
    # An external_id equal to another customer's id: the id wins.
    c = (await create(client, tenant, external_id=a["id"])).json()
    other = await make_tenant(name="Other")
    foreign = (await create(client, other, external_id="foreign")).json()

    refs = {a["id"], "b", c["id"], "foreign", foreign["id"], "missing"}
    async with ctx.database.read() as session:
        with count_queries(ctx) as statements:
            found = await customers_by_reference(session, tenant.id, refs)
        empty = await customers_by_reference(session, tenant.id, set())

    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert found == {
        a["id"]: a["id"],
        "b": b["id"],
        c["id"]: c["id"],
    }
    assert empty == {}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/customers/c%00", None),
        ("GET", "/v1/customers?external_id=c%00", None),
        ("POST", "/v1/customers", {"external_id": "c1", "name": "Acme\u0000"}),
        ("PATCH", "/v1/tenant", {"name": "Acme\u0000"}),
    ],
)
async def test_a_nul_character_in_text_is_never_a_server_error(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, headers=tenant.headers(), json=body)
    assert response.status_code < 500, response.text
    if ctx.database.dialect == "postgresql":  # SQLite stores NUL; PostgreSQL cannot
        assert_problem(response, 422, "validation_error")
