"""Dimensions through the public API: meters' group_by and allow_negative, group keys in the
rollups, per-group usage with group_by and filters, the cap of groups per period."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.customers.models import Customer
from billing.metering import group_cap, usage_report
from billing.metering import usage as reads
from billing.metering.models import Meter
from billing.metering.usage_models import UsageGroup, UsageRollup, UsageUniqueValue
from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.integration.web.test_auth import assert_problem

AT = "2026-11-21T11:00:00Z"  # an hour before the frozen clock
FROM, TO = "2026-11-01T00:00:00Z", "2026-11-22T00:00:00Z"
MODELS = [("gpt-4o", "input", "12.5"), ("gpt-4o", "output", "3"), ("claude", "input", "0.25")]


async def create_meter(client: httpx.AsyncClient, tenant: TenantHandle, **body: Any) -> httpx.Response:
    return await client.post("/v1/meters", headers=tenant.headers(), json={"aggregation": "sum", **body})


@pytest.fixture
async def grouped(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    """acme-1 and acme-2, subscribed since January (calendar months in UTC), with ``tokens``
    (sum by model and direction), ``users`` (distinct user_id by region), ``plain`` (sum) and
    ``balance`` (sum, negative values allowed)."""
    for customer in ("acme-1", "acme-2"):
        body = {"external_id": customer, "timezone": "UTC"}
        assert (await client.post("/v1/customers", headers=tenant.headers(), json=body)).status_code == 201
    for meter in (
        {"key": "tokens", "group_by": ["model", "direction"]},
        {"key": "users", "aggregation": "unique_count", "unique_property": "user_id", "group_by": ["region"]},
        {"key": "plain"},
        {"key": "balance", "allow_negative": True},
    ):
        assert (await create_meter(client, tenant, **meter)).status_code == 201
    await subscribe(client, tenant, ["acme-1", "acme-2"], starts_at="2026-01-01T00:00:00Z")
    return tenant


def event(event_id: str, value: object = "1", meter: str = "tokens", **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "customer": "acme-1", "meter": meter, "timestamp": AT, "value": value, **fields}


def token(event_id: str, model: Any, direction: Any, value: str = "1", **fields: Any) -> dict[str, Any]:
    return event(event_id, value, properties={"model": model, "direction": direction}, **fields)


async def post(
    client: httpx.AsyncClient, tenant: TenantHandle, events: list[dict[str, Any]]
) -> dict[str, Any]:
    response = await client.post(
        "/v1/events/batch", headers=tenant.headers(Scope.INGEST), json={"events": events}
    )
    assert response.status_code == 200, response.text
    return response.json()


def statuses(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(r["status"], r.get("code")) for r in answer["results"]]


async def usage(
    client: httpx.AsyncClient, tenant: TenantHandle, params: list[tuple[str, str]], customer: str = "acme-1"
) -> httpx.Response:
    query = [("from", FROM), ("to", TO), *params]
    if not any(name == "meter" for name, _ in params):
        query.append(("meter", "tokens"))
    return await client.get(f"/v1/customers/{customer}/usage", headers=tenant.headers(), params=query)


def totals(body: dict[str, Any]) -> dict[tuple[Any, ...], Decimal]:
    """Each group's buckets added up, by its values in group_by order."""
    return {
        tuple(g["group"][key] for key in body["group_by"]): sum(
            (Decimal(b["value"]) for b in g["buckets"] if b["value"] is not None), Decimal(0)
        )
        for g in body["groups"]
    }


# Meters


async def test_a_meter_shows_its_group_by_and_allow_negative(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    body = (await create_meter(client, tenant, key="t", group_by=["Model.v2", "dir-1", "a_b"])).json()
    assert body["group_by"] == ["Model.v2", "dir-1", "a_b"] and body["allow_negative"] is False
    assert (await client.get("/v1/meters/t", headers=tenant.headers())).json() == body
    negative = (await create_meter(client, tenant, key="n", allow_negative=True)).json()
    assert negative["group_by"] == [] and negative["allow_negative"] is True


@pytest.mark.parametrize(
    ("group_by", "field"),
    [
        (["a", "b", "c", "d"], "group_by"),
        (["region", "region"], "group_by[1]"),
        (["ok", "has space"], "group_by[1]"),
        ([""], "group_by[0]"),
        (["x" * 65], "group_by[0]"),
        (["é"], "group_by[0]"),
    ],
)
async def test_bad_group_by_keys_answer_422_with_the_field(
    client: httpx.AsyncClient, tenant: TenantHandle, group_by: list[str], field: str
) -> None:
    response = await create_meter(client, tenant, key="t", group_by=group_by)
    assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert (await client.get("/v1/meters", headers=tenant.headers())).json()["data"] == []


async def test_group_by_and_allow_negative_are_fixed_at_creation(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    for change in ({"group_by": ["model"]}, {"allow_negative": True}):
        response = await client.patch("/v1/meters/tokens", headers=grouped.headers(), json=change)
        assert response.status_code in (400, 422), response.text
    body = (await client.get("/v1/meters/tokens", headers=grouped.headers())).json()
    assert (body["group_by"], body["allow_negative"]) == (["model", "direction"], False)


# Group keys and per-group usage


async def test_each_group_is_rolled_up_under_its_key(
    client: httpx.AsyncClient, grouped: TenantHandle, ctx: AppContext
) -> None:
    events = [token(f"e{n}", model, direction, value) for n, (model, direction, value) in enumerate(MODELS)]
    events += [
        token("again", "gpt-4o", "input", "0.5"),
        event("numbers", "2", properties={"model": 4, "direction": True}),
        event("decimal", "2", properties={"model": 1.5, "direction": False}),
        event("missing", "7", properties={"direction": None}),
        event("none", "1"),
        event("plain", "5", meter="plain", properties={"model": "x"}),
    ]
    assert (await post(client, grouped, events))["accepted"] == len(events)

    async with ctx.database.read() as session:
        rows = (await session.execute(sa.select(UsageRollup.group_key, UsageRollup.value_sum))).all()
    assert {key: value for key, value in rows} == {
        '["gpt-4o","input"]': Decimal("13"),
        '["gpt-4o","output"]': Decimal("3"),
        '["claude","input"]': Decimal("0.25"),
        '["4","true"]': Decimal("2"),
        '["1.5","false"]': Decimal("2"),
        "[null,null]": Decimal("8"),
        "": Decimal("5"),
    }


async def test_the_usage_query_splits_by_group_sorted_with_nulls_last(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    events = [token(f"e{n}", model, direction, value) for n, (model, direction, value) in enumerate(MODELS)]
    events += [
        token("y", "gpt-4o", "input", "0.125", timestamp="2026-11-20T09:00:00Z"),
        event("no-model", "4", properties={"direction": "input"}),
        token("nothing", None, None, "2"),
    ]
    await post(client, grouped, events)
    expected: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for e in events:
        properties = e["properties"]
        expected[(properties.get("model"), properties.get("direction"))] += Decimal(e["value"])

    both = (await usage(client, grouped, [("group_by", "model"), ("group_by", "direction")])).json()
    assert both["group_by"] == ["model", "direction"] and "buckets" not in both
    assert [tuple(g["group"].values()) for g in both["groups"]] == [
        ("claude", "input"),
        ("gpt-4o", "input"),
        ("gpt-4o", "output"),
        (None, "input"),
        (None, None),
    ]
    assert totals(both) == expected
    assert len(both["groups"][0]["buckets"]) == 21  # the days of [FROM, TO)

    by_direction = (await usage(client, grouped, [("group_by", "direction")])).json()
    per_direction: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for (_, direction), value in expected.items():
        per_direction[(direction,)] += value
    assert totals(by_direction) == per_direction
    assert [g["group"] for g in by_direction["groups"]] == [
        {"direction": "input"},
        {"direction": "output"},
        {"direction": None},
    ]
    comma = (await usage(client, grouped, [("group_by", "direction,model")])).json()
    assert comma["group_by"] == ["direction", "model"]
    assert totals(comma) == {(d, m): v for (m, d), v in expected.items()}

    whole = (await usage(client, grouped, [])).json()
    assert "groups" not in whole
    assert sum(Decimal(b["value"]) for b in whole["buckets"]) == sum(expected.values())


async def test_filters_or_within_a_key_and_and_across_keys(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    events = [
        token("a", "gpt-4o", "input", "1"),
        token("b", "gpt-4o", "output", "10"),
        token("c", "claude", "input", "100"),
        token("d", "claude", "output", "1000"),
        token("e", "llama", "input", "10000"),
    ]
    await post(client, grouped, events)

    def value_of(body: dict[str, Any]) -> Decimal:
        return sum((Decimal(b["value"]) for b in body["buckets"]), Decimal(0))

    either = [("filter[model]", "gpt-4o"), ("filter[model]", "claude")]
    assert value_of((await usage(client, grouped, either)).json()) == Decimal(1111)
    both = [*either, ("filter[direction]", "input")]
    assert value_of((await usage(client, grouped, both)).json()) == Decimal(101)
    split = (await usage(client, grouped, [*either, ("group_by", "direction")])).json()
    assert totals(split) == {("input",): Decimal(101), ("output",): Decimal(1010)}
    none = [("filter[model]", "mistral")]
    assert value_of((await usage(client, grouped, none)).json()) == 0
    assert (await usage(client, grouped, [*none, ("group_by", "model")])).json()["groups"] == []


async def test_distinct_counts_are_exact_per_group_and_across_groups(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    seen = [
        ("u1", "eu", 9),
        ("u1", "eu", 10),
        ("u2", "eu", 9),
        ("u1", "us", 10),
        ("u3", "us", 10),
        ("u4", None, 9),
    ]
    events = [
        event(
            f"u{n}",
            meter="users",
            timestamp=f"2026-11-21T{hour:02d}:00:00Z",
            properties={"user_id": user, **({"region": region} if region else {})},
        )
        for n, (user, region, hour) in enumerate(seen)
    ]
    await post(client, grouped, events)
    per_region: dict[Any, set[str]] = defaultdict(set)
    for user, region, _ in seen:
        per_region[region].add(user)

    body = (await usage(client, grouped, [("meter", "users"), ("group_by", "region")])).json()
    assert totals(body) == {(region,): Decimal(len(users)) for region, users in per_region.items()}
    whole = (await usage(client, grouped, [("meter", "users")])).json()
    assert Decimal(whole["buckets"][-1]["value"]) == len({user for user, _, _ in seen})  # 4, not 6
    eu_hours = await usage(
        client,
        grouped,
        [("meter", "users"), ("filter[region]", "eu"), ("granularity", "hour")],
    )
    by_hour = {b["start"]: b["value"] for b in eu_hours.json()["buckets"]}
    assert (by_hour["2026-11-21T09:00:00Z"], by_hour["2026-11-21T10:00:00Z"]) == ("2", "1")


# Rejections


async def test_negative_values_are_refused_unless_the_meter_allows_them(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    answer = await post(
        client,
        grouped,
        [
            event("neg", "-0.5", meter="plain"),
            event("zero", "0", meter="plain"),
            event("minus-zero", "-0", meter="plain"),
            token("neg-grouped", "gpt-4o", "input", "-1"),
            event("credit", "-2.5", meter="balance"),
            event("debit", "1", meter="balance"),
        ],
    )
    assert statuses(answer) == [
        ("rejected", "negative_value"),
        ("accepted", None),
        ("accepted", None),
        ("rejected", "negative_value"),
        ("accepted", None),
        ("accepted", None),
    ]
    body = (await usage(client, grouped, [("meter", "balance"), ("granularity", "hour")])).json()
    assert [b["value"] for b in body["buckets"] if b["value"] != "0"] == ["-1.5"]
    plain = (await usage(client, grouped, [("meter", "plain")])).json()
    assert all(b["value"] == "0" for b in plain["buckets"])
    assert (await client.get("/v1/events/neg", headers=grouped.headers())).status_code == 404


async def test_a_group_value_over_128_characters_or_not_scalar_is_an_invalid_event(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    answer = await post(
        client,
        grouped,
        [
            token("long", "m" * 129, "input"),
            token("just", "m" * 128, "input"),
            token("object", {"name": "gpt"}, "input"),
            token("list", ["gpt"], "input"),
            event("plain-long", meter="plain", properties={"model": "m" * 500}),
        ],
    )
    assert statuses(answer) == [
        ("rejected", "invalid_event"),
        ("accepted", None),
        ("rejected", "invalid_event"),
        ("rejected", "invalid_event"),
        ("accepted", None),
    ]
    assert "128" in answer["results"][0]["message"]


# The cap


async def open_groups(
    client: httpx.AsyncClient, tenant: TenantHandle, prefix: str, models: range, **fields: Any
) -> dict[str, Any]:
    return await post(client, tenant, [token(f"{prefix}-{n}", f"m{n}", "input", **fields) for n in models])


async def test_the_1001st_group_of_a_period_is_refused_while_known_groups_accept(
    client: httpx.AsyncClient, grouped: TenantHandle, ctx: AppContext
) -> None:
    assert (await open_groups(client, grouped, "g", range(1000)))["accepted"] == 1000
    answer = await post(
        client,
        grouped,
        [
            token("over", "m1000", "input"),
            token("known", "m999", "input", "2"),
            token("g-5", "m5", "input"),  # a resend: a duplicate, whatever the count
            token("other-direction", "m0", "output"),
            token("other-customer", "m1000", "input", customer="acme-2"),
            token("last-period", "m1000", "input", timestamp="2026-10-31T23:59:59Z"),
        ],
    )
    assert statuses(answer) == [
        ("rejected", "too_many_groups"),
        ("accepted", None),
        ("duplicate", None),
        ("rejected", "too_many_groups"),
        ("accepted", None),
        ("accepted", None),
    ]
    async with ctx.database.read() as session:
        november = await session.scalar(
            sa.select(sa.func.count()).where(UsageGroup.period_start == datetime(2026, 11, 1, tzinfo=UTC))
        )
    assert november == 1001  # acme-1's 1000 and acme-2's one
    body = (await usage(client, grouped, [("group_by", "model"), ("filter[model]", "m999")])).json()
    assert totals(body) == {("m999",): Decimal(3)}


async def test_the_cap_counts_groups_per_customer_meter_and_period(
    client: httpx.AsyncClient, grouped: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_cap, "MAX_GROUPS", 3)
    monkeypatch.setattr(group_cap, "_PER_STATEMENT", 2)  # look-ups and inserts in several statements
    first = await open_groups(client, grouped, "a", range(5))
    assert statuses(first) == [("accepted", None)] * 3 + [("rejected", "too_many_groups")] * 2
    again = await post(
        client,
        grouped,
        [
            token("b-0", "m0", "input"),
            token("b-3", "m3", "input"),
            token("b-null", None, None),
            event("b-users", meter="users", properties={"user_id": "u", "region": "eu"}),
            token("b-oct", "m3", "input", timestamp="2026-10-15T00:00:00Z"),
        ],
    )
    assert statuses(again) == [
        ("accepted", None),
        ("rejected", "too_many_groups"),
        ("rejected", "too_many_groups"),
        ("accepted", None),
        ("accepted", None),
    ]
    body = (await usage(client, grouped, [("group_by", "model")])).json()
    assert totals(body) == {("m0",): Decimal(2), ("m1",): Decimal(1), ("m2",): Decimal(1)}


async def test_a_rejected_batch_member_leaves_its_slot_to_a_later_event(
    client: httpx.AsyncClient, grouped: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event rejected for another reason, or a repeat of an id in the batch, opens no group."""
    monkeypatch.setattr(group_cap, "MAX_GROUPS", 2)
    answer = await post(
        client,
        grouped,
        [
            token("x", "m0", "input"),
            token("x", "m1", "input"),  # a conflict with the first x: opens nothing
            token("neg", "m2", "input", "-1"),
            token("y", "m3", "input"),
            token("z", "m4", "input"),
        ],
    )
    assert statuses(answer) == [
        ("accepted", None),
        ("conflict", "conflict"),
        ("rejected", "negative_value"),
        ("accepted", None),
        ("rejected", "too_many_groups"),
    ]


@pytest.mark.postgres_only
async def test_concurrent_batches_never_both_take_the_last_slot(
    client: httpx.AsyncClient, grouped: TenantHandle, monkeypatch: pytest.MonkeyPatch, ctx: AppContext
) -> None:
    monkeypatch.setattr(group_cap, "MAX_GROUPS", 2)
    for round_ in range(5):
        customer = "acme-1" if round_ % 2 == 0 else "acme-2"
        at = f"2026-{round_ + 2:02d}-10T00:00:00Z"  # a fresh period each round
        await post(
            client, grouped, [token(f"r{round_}-first", "m0", "input", customer=customer, timestamp=at)]
        )
        racing = [
            post(
                client, grouped, [token(f"r{round_}-{n}", f"m{n}", "input", customer=customer, timestamp=at)]
            )
            for n in (1, 2)
        ]
        answers = await asyncio.gather(*racing)
        assert sorted(a["accepted"] for a in answers) == [0, 1], answers
    async with ctx.database.read() as session:
        counts = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(UsageGroup)
                .group_by(UsageGroup.customer_id, UsageGroup.period_start)
            )
        ).scalars()
        assert set(counts) == {2}


# Reading and isolation


async def test_group_by_and_filter_keys_outside_the_meters_group_by_answer_422(
    client: httpx.AsyncClient, grouped: TenantHandle
) -> None:
    for params, field in [
        ([("group_by", "region")], "group_by"),
        ([("group_by", "model,model")], "group_by"),
        ([("group_by", "model,")], "group_by"),
        ([("filter[region]", "eu")], "filter[region]"),
        ([("filter[model]", "a"), ("filter[]", "b")], "filter[]"),
        ([("filter", "x")], "filter"),
        ([("meter", "plain"), ("group_by", "model")], "group_by"),
        ([("meter", "plain"), ("filter[model]", "x")], "filter[model]"),
    ]:
        response = await usage(client, grouped, params)
        assert_problem(response, 422, "validation_error")
        assert [e["field"] for e in response.json()["errors"]] == [field], params


async def test_filters_never_reach_another_tenants_usage(
    client: httpx.AsyncClient,
    grouped: TenantHandle,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
) -> None:
    other = await make_tenant(name="Other")
    await client.post("/v1/customers", headers=other.headers(), json={"external_id": "acme-1"})
    assert (
        await create_meter(client, other, key="tokens", group_by=["model", "direction"])
    ).status_code == 201
    await subscribe(client, other, ["acme-1"], starts_at="2026-01-01T00:00:00Z")
    await post(client, other, [token("theirs", "gpt-4o", "input", "1000")])
    await post(client, grouped, [token("mine", "gpt-4o", "input", "1")])

    params = [("filter[model]", "gpt-4o"), ("group_by", "model")]
    mine = (await usage(client, grouped, params)).json()
    theirs = (await usage(client, other, params)).json()
    assert totals(mine) == {("gpt-4o",): Decimal(1)} and totals(theirs) == {("gpt-4o",): Decimal(1000)}
    their_customer = (await client.get("/v1/customers/acme-1", headers=other.headers())).json()["id"]
    assert_problem(await usage(client, grouped, params, customer=their_customer), 404, "not_found")


async def test_unique_values_keep_their_group(
    client: httpx.AsyncClient, grouped: TenantHandle, ctx: AppContext
) -> None:
    await post(
        client,
        grouped,
        [
            event("a", meter="users", properties={"user_id": "u1", "region": "eu"}),
            event("b", meter="users", properties={"user_id": "u1", "region": "us"}),
            event("c", meter="users", properties={"user_id": "u1", "region": "eu"}),
        ],
    )
    async with ctx.database.read() as session:
        rows = (await session.execute(sa.select(UsageUniqueValue.group_key, UsageUniqueValue.value))).all()
    assert sorted(rows) == [('["eu"]', "u1"), ('["us"]', "u1")]


async def test_grouped_period_tallies_split_whole_and_cut_hours_by_group(
    client: httpx.AsyncClient, grouped: TenantHandle, ctx: AppContext
) -> None:
    """A period starting and ending at :30 (a half-hour zone): the cut hours come from the
    events, whose group keys are computed as ingestion stored them."""
    sent = [
        ("out-before", "2026-11-20T10:15:00Z", "gpt-4o", "input", "1000"),
        ("cut-start", "2026-11-20T10:45:00Z", "gpt-4o", "input", "1"),
        ("whole", "2026-11-20T15:00:00Z", "gpt-4o", "input", "2"),
        ("whole-2", "2026-11-20T15:10:00Z", 4, True, "4"),
        ("cut-end", "2026-11-21T10:20:00Z", 4, True, "8"),
        ("cut-end-2", "2026-11-21T10:25:00Z", None, None, "16"),
        ("out-after", "2026-11-21T10:40:00Z", "gpt-4o", "input", "2000"),
    ]
    events = [token(i, model, direction, value, timestamp=at) for i, at, model, direction, value in sent]
    events.append(
        event("unique", meter="users", timestamp="2026-11-20T10:50:00Z", properties={"user_id": "u"})
    )
    assert (await post(client, grouped, events))["accepted"] == len(events)
    period = (datetime(2026, 11, 20, 10, 30, tzinfo=UTC), datetime(2026, 11, 21, 10, 30, tzinfo=UTC))
    async with ctx.database.read() as session:
        meters = list(await session.scalars(sa.select(Meter).where(Meter.key.in_(["tokens", "users"]))))
        customer = await session.scalar(sa.select(Customer.id).where(Customer.external_id == "acme-1"))
        by_group = await reads.grouped_period_tallies(session, grouped.id, [customer], meters, period)
        whole = await reads.period_tallies(session, grouped.id, [customer], meters, period)
    ids = {m.key: m.id for m in meters}
    sums = {
        key: tally.value("sum")
        for (c, meter, key), tally in by_group.items()
        if meter == ids["tokens"] and c == customer
    }
    assert sums == {'["gpt-4o","input"]': Decimal(3), '["4","true"]': Decimal(12), "[null,null]": Decimal(16)}
    assert by_group[(customer, ids["users"], "[null]")].value("unique_count") == 1
    assert whole[(customer, ids["tokens"])].value("sum") == Decimal(31)


async def test_an_answer_of_too_many_grouped_buckets_answers_422(
    client: httpx.AsyncClient, grouped: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_report, "MAX_GROUPED_BUCKETS", 42)
    await post(client, grouped, [token("a", "m0", "input"), token("b", "m1", "input")])
    assert (await usage(client, grouped, [("group_by", "model")])).status_code == 200  # 2 x 21 days
    response = await usage(
        client, grouped, [("group_by", "model"), ("group_by", "direction"), ("granularity", "hour")]
    )
    assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in response.json()["errors"]] == ["group_by"]
