"""Usage ingestion through the public API: per-event results, idempotency, exactness, usage."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import msgspec
import pytest
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.customers.models import Customer
from billing.metering.models import Meter
from billing.metering.usage_models import UsageEvent
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

AT = "2026-11-21T11:00:00Z"  # an hour before the frozen clock


def event(event_id: str, value: object = "1", **overrides: object) -> dict:
    body = {"id": event_id, "customer": "acme-1", "meter": "api_calls", "timestamp": AT, "value": value}
    body.update(overrides)
    return body


async def post_batch(client: httpx.AsyncClient, tenant: TenantHandle, events: list) -> dict:
    response = await client.post(
        "/v1/events/batch", headers=tenant.headers(Scope.INGEST), json={"events": events}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def usage(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    meter: str = "api_calls",
    customer: str = "acme-1",
    **params: str,
) -> list[dict]:
    query = {"meter": meter, "from": "2026-11-01T00:00:00Z", "to": "2026-11-22T00:00:00Z", **params}
    response = await client.get(f"/v1/customers/{customer}/usage", headers=tenant.headers(), params=query)
    assert response.status_code == 200, response.text
    return response.json()["buckets"]


async def create_negative_meter(
    client: httpx.AsyncClient, tenant: TenantHandle, key: str = "balance"
) -> None:
    body = {"key": key, "aggregation": "sum", "allow_negative": True}
    response = await client.post("/v1/meters", headers=tenant.headers(), json=body)
    assert response.status_code == 201, response.text


def total(buckets: list[dict]) -> Decimal:
    return sum((Decimal(b["value"]) for b in buckets if b["value"] is not None), Decimal(0))


async def test_a_mixed_batch_answers_every_event_in_order(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    await post_batch(client, metered, [event("seen-before", "5"), event("conflicting", "5")])
    bad = [
        ({"id": "c1", "customer": "nobody"}, "unknown_customer"),
        ({"id": "c2", "meter": "no_such_meter"}, "unknown_meter"),
        ({"id": "c3", "value": "abc"}, "invalid_value"),
        ({"id": "c4", "value": "Infinity"}, "invalid_value"),
        ({"id": "c5", "value": "NaN"}, "invalid_value"),
        ({"id": "c6", "value": "0.0000000000001"}, "invalid_value"),
        ({"id": "c7", "value": "1000000000000000.1"}, "invalid_value"),
        ({"id": "c8", "value": ""}, "invalid_value"),
        ({"id": "c9", "value": True}, "invalid_value"),
        ({"id": "c10", "timestamp": "2026-11-21T12:05:01Z"}, "timestamp_in_future"),
        ({"id": "c11", "timestamp": "2026-11-21T11:00:00"}, "invalid_event"),
        ({"id": "c12", "properties": ["not", "an", "object"]}, "invalid_event"),
        ({"id": "c13", "properties": {"blob": "x" * 4100}}, "invalid_event"),
        ({"id": "x" * 129}, "invalid_event"),
        ({"id": "c15", "surprise": 1}, "invalid_event"),
        ({"id": "c16", "meter": "users", "properties": {}}, "invalid_event"),
    ]
    events: list = [event(f"ok-{n}", str(n)) for n in range(1000 - len(bad) - 4)]
    events += [event("seen-before", "5"), event("conflicting", "6"), event("ok-0", "99"), "not an object"]
    events += [{**event(str(fields["id"])), **fields} for fields, _ in bad]
    assert len(events) == 1000

    body = await post_batch(client, metered, events)

    results = body["results"]
    assert [r["index"] for r in results] == list(range(1000))
    accepted = 1000 - len(bad) - 4
    assert all(r["status"] == "accepted" for r in results[:accepted])
    assert [r["status"] for r in results[accepted : accepted + 4]] == [
        "duplicate",
        "conflict",
        "conflict",
        "rejected",
    ]
    assert results[accepted + 3]["code"] == "invalid_event"
    for result, (fields, code) in zip(results[accepted + 4 :], bad, strict=True):
        assert (result["status"], result["code"]) == ("rejected", code), (fields, result)
        assert result["message"]
    assert body["accepted"] == accepted
    assert body["duplicates"] == 1 and body["conflicts"] == 2 and body["rejected"] == len(bad) + 1
    assert total(await usage(client, metered)) == sum(range(accepted)) + 10


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"NaN"', "NaN is not a finite number"),
        ('"-Infinity"', "-Infinity is not a finite number"),
        ('"1E+30"', "1E+30 is larger in magnitude than 1000000000000000"),
        ("1e30", "1e30 is larger in magnitude than 1000000000000000"),
        ("1000000000000000.5", "1000000000000000.5 is larger in magnitude than 1000000000000000"),
        ('"0.0000000000001"', "0.0000000000001 has 13 fractional digits; at most 12 are allowed"),
        ("1.0000000000001E-3", "1.0000000000001E-3 has 16 fractional digits; at most 12 are allowed"),
    ],
)
async def test_a_rejected_value_is_named_as_it_was_written(
    client: httpx.AsyncClient, metered: TenantHandle, value: str, message: str
) -> None:
    raw = f'{{"id": "v1", "customer": "acme-1", "meter": "api_calls", "timestamp": "{AT}", "value": {value}}}'
    headers = {**metered.headers(Scope.INGEST), "content-type": "application/json"}
    batch = await client.post("/v1/events/batch", headers=headers, content=f'{{"events": [{raw}]}}')
    single = await client.post("/v1/events", headers=headers, content=raw)
    for response in (batch, single):
        assert response.status_code in (200, 202), response.text
        [result] = response.json()["results"]
        assert (result["status"], result["code"], result["message"]) == ("rejected", "invalid_value", message)


async def test_an_unknown_customer_or_meter_is_named_as_it_was_written(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    body = await post_batch(
        client, metered, [event("u1", customer="O'Brien"), event("u2", meter="api\\calls")]
    )
    assert [(r["code"], r["message"]) for r in body["results"]] == [
        ("unknown_customer", "no customer 'O'Brien'"),
        ("unknown_meter", "no meter 'api\\calls'"),
    ]


async def test_duplicates_and_conflicts_never_change_usage(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    first = [event(f"e{n}", "2.5") for n in range(10)]
    await post_batch(client, metered, first)
    before = await usage(client, metered)
    again = await post_batch(client, metered, first + [event(f"e{n}", "100") for n in range(10)])
    assert again["duplicates"] == 10 and again["conflicts"] == 10 and again["accepted"] == 0
    assert await usage(client, metered) == before
    assert total(before) == Decimal(25)


async def test_the_same_id_twice_in_one_batch_is_accepted_once(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    body = await post_batch(client, metered, [event("twin", "3"), event("twin", "3"), event("twin", "4")])
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate", "conflict"]
    assert total(await usage(client, metered)) == 3


async def test_a_single_event_is_answered_202_and_can_be_read_back(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    posted = await client.post(
        "/v1/events",
        headers=metered.headers(Scope.INGEST),
        json=event("one", 12.5, properties={"region": "eu"}),
    )
    assert posted.status_code == 202
    assert posted.json()["results"] == [{"index": 0, "id": "one", "status": "accepted"}]
    read = await client.get("/v1/events/one", headers=metered.headers(Scope.FINANCE))
    assert read.status_code == 200
    body = read.json()
    assert body["value"] == "12.5" and body["billing_status"] == "pending" and body["invoice"] is None
    assert body["customer_external_id"] == "acme-1" and body["meter"] == "api_calls"
    assert body["properties"] == {"region": "eu"} and body["timestamp"] == AT
    assert_problem(await client.get("/v1/events/never-sent", headers=metered.headers()), 404, "not_found")


async def test_payload_hashes_are_those_of_events_stored_by_earlier_versions(
    client: httpx.AsyncClient, metered: TenantHandle, ctx: AppContext
) -> None:
    """A resent event must still be a duplicate of one stored before an upgrade: its hash is
    BLAKE2b-128 of the JSON array (customer id, meter id, RFC 3339 UTC timestamp, canonical
    value, properties with sorted keys), as first released."""
    await create_negative_meter(client, metered)
    sent = [
        event("h1", "12.500", timestamp="2026-11-21T12:05:09+01:00", properties={"b": 1, "a": "é"}),
        event("h2", 1e3, timestamp="2026-11-21T11:00:00.120000Z"),
        event(
            "h3", "-0.000000000001", timestamp="2026-11-21T10:59:59.999999Z", properties={}, meter="balance"
        ),
    ]
    assert (await post_batch(client, metered, sent))["accepted"] == 3
    async with ctx.database.read() as session:
        stored = dict((await session.execute(sa.select(UsageEvent.event_id, UsageEvent.payload_hash))).all())
        customer = await session.scalar(sa.select(Customer.id).where(Customer.external_id == "acme-1"))
        meters = dict((await session.execute(sa.select(Meter.key, Meter.id))).all())
    for body in sent:
        meter = meters[str(body["meter"])]
        at = datetime.fromisoformat(str(body["timestamp"])).astimezone(UTC)
        canonical = format(Decimal(str(body["value"])).normalize(), "f")
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S") + (at.strftime(".%f") if at.microsecond else "") + "Z"
        payload = [customer, meter, stamp, canonical, body.get("properties")]
        digest = hashlib.blake2b(msgspec.json.encode(payload, order="sorted"), digest_size=16).hexdigest()
        assert stored[body["id"]] == digest, body


async def test_a_missing_value_counts_as_one(client: httpx.AsyncClient, metered: TenantHandle) -> None:
    plain = event("no-value")
    del plain["value"]
    await post_batch(client, metered, [plain])
    assert total(await usage(client, metered)) == 1


@pytest.mark.parametrize("count", [0, 1001])
async def test_a_batch_outside_1_to_1000_answers_422(
    client: httpx.AsyncClient, metered: TenantHandle, count: int
) -> None:
    events = [event(f"e{n}") for n in range(count)]
    response = await client.post(
        "/v1/events/batch", headers=metered.headers(Scope.INGEST), json={"events": events}
    )
    assert_problem(response, 422, "validation_error")
    assert total(await usage(client, metered)) == 0


async def test_a_malformed_batch_answers_400(client: httpx.AsyncClient, metered: TenantHandle) -> None:
    headers = {**metered.headers(Scope.INGEST), "content-type": "application/json"}
    response = await client.post("/v1/events/batch", headers=headers, content=b'{"events": [')
    assert_problem(response, 400, "malformed_json")


async def test_only_ingest_and_admin_keys_post_events(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    response = await client.post("/v1/events", headers=metered.headers(Scope.FINANCE), json=event("f"))
    assert_problem(response, 403, "forbidden")
    assert (
        await client.post("/v1/events", headers=metered.headers(Scope.ADMIN), json=event("a"))
    ).status_code == 202
    ingest = metered.headers(Scope.INGEST)
    assert_problem(await client.get("/v1/events/a", headers=ingest), 403, "forbidden")
    assert_problem(await client.get("/v1/customers", headers=ingest), 403, "forbidden")


async def test_values_are_exact_at_the_extremes(client: httpx.AsyncClient, metered: TenantHandle) -> None:
    raw = (
        b'{"events": ['
        b'{"id": "big", "customer": "acme-1", "meter": "api_calls", "timestamp": "2026-11-21T11:00:00Z",'
        b' "value": "999999999999999.999999999999"},'
        b'{"id": "tiny", "customer": "acme-1", "meter": "api_calls", "timestamp": "2026-11-21T11:00:00Z",'
        b' "value": 0.000000000001},'
        b'{"id": "a", "customer": "acme-1", "meter": "api_calls", "timestamp": "2026-11-21T10:00:00Z",'
        b' "value": 0.1},'
        b'{"id": "b", "customer": "acme-1", "meter": "api_calls", "timestamp": "2026-11-21T10:00:00Z",'
        b' "value": 0.2},'
        b'{"id": "neg", "customer": "acme-1", "meter": "balance", "timestamp": "2026-11-21T09:00:00Z",'
        b' "value": "-1000000000000000"}'
        b"]}"
    )
    await create_negative_meter(client, metered)
    headers = {**metered.headers(Scope.INGEST), "content-type": "application/json"}
    assert (await client.post("/v1/events/batch", headers=headers, content=raw)).json()["accepted"] == 5
    hours = {"granularity": "hour", "from": "2026-11-21T09:00:00Z", "to": "2026-11-21T12:00:00Z"}
    buckets = await usage(client, metered, **hours)
    assert [b["value"] for b in buckets] == ["0", "0.3", "1000000000000000"]
    negative = await usage(client, metered, meter="balance", **hours)
    assert [b["value"] for b in negative] == ["-1000000000000000", "0", "0"]
    assert (await client.get("/v1/events/big", headers=metered.headers())).json()[
        "value"
    ] == "999999999999999.999999999999"


async def test_each_aggregation_over_hours_and_days(client: httpx.AsyncClient, metered: TenantHandle) -> None:
    def at(hour: int, minute: int = 0) -> str:
        return f"2026-11-20T{hour:02d}:{minute:02d}:00Z"

    events = [
        event("s1", "1.5", timestamp=at(8)),
        event("s2", "2", timestamp=at(9, 30)),
        event("r1", meter="requests", timestamp=at(8)),
        event("r2", meter="requests", timestamp=at(9)),
        event("r3", meter="requests", timestamp=at(9, 59)),
        event("m1", "7", meter="seats", timestamp=at(8)),
        event("m2", "3", meter="seats", timestamp=at(9)),
        event("u1", meter="users", timestamp=at(8), properties={"user_id": "ann"}),
        event("u2", meter="users", timestamp=at(9), properties={"user_id": "ann"}),
        event("u3", meter="users", timestamp=at(9, 10), properties={"user_id": "bob"}),
        event("u4", meter="users", timestamp=at(9, 20), properties={"user_id": 42}),
        event("l1", "10", meter="plan_level", timestamp=at(9, 45)),
        event("l2", "20", meter="plan_level", timestamp=at(9, 45)),  # same instant: accepted last wins
        event("l3", "5", meter="plan_level", timestamp=at(8)),  # later accepted, earlier timestamp
    ]
    await post_batch(client, metered, events)
    hours = {"from": at(8), "to": at(10), "granularity": "hour"}
    days = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "granularity": "day"}
    expected = {
        "api_calls": (["1.5", "2"], ["3.5"]),
        "requests": (["1", "2"], ["3"]),
        "seats": (["7", "3"], ["7"]),
        "users": (["1", "3"], ["3"]),
        "plan_level": (["5", "20"], ["20"]),
    }
    for meter, (by_hour, by_day) in expected.items():
        assert [b["value"] for b in await usage(client, metered, meter, **hours)] == by_hour, meter
        assert [b["value"] for b in await usage(client, metered, meter, **days)] == by_day, meter
    empty = {"from": at(12), "to": at(13), "granularity": "hour"}
    assert (await usage(client, metered, "seats", **empty))[0]["value"] is None
    assert (await usage(client, metered, "api_calls", **empty))[0]["value"] == "0"


async def test_day_buckets_follow_the_customers_timezone_across_dst(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    # Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours, 22:00Z to 23:00Z.
    events = [
        event("before", "1", customer="acme-2", timestamp="2026-10-24T21:59:59Z"),  # Oct 24, 23:59:59 CEST
        event("first", "10", customer="acme-2", timestamp="2026-10-24T22:00:00Z"),  # Oct 25, 00:00 CEST
        event("last", "100", customer="acme-2", timestamp="2026-10-25T22:59:59Z"),  # Oct 25, 23:59:59 CET
        event("after", "1000", customer="acme-2", timestamp="2026-10-25T23:00:00Z"),  # Oct 26
    ]
    await post_batch(client, metered, events)
    buckets = await usage(
        client, metered, customer="acme-2", **{"from": "2026-10-23T22:00:00Z", "to": "2026-10-26T23:00:00Z"}
    )
    assert [(b["start"], b["value"]) for b in buckets] == [
        ("2026-10-23T22:00:00Z", "1"),
        ("2026-10-24T22:00:00Z", "110"),
        ("2026-10-25T23:00:00Z", "1000"),
    ]


async def test_day_buckets_split_hours_in_half_hour_zones(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    # Asia/Kolkata is UTC+05:30: its days start at 18:30 UTC, in the middle of a rollup hour.
    events = [
        event(
            "k1",
            "1",
            customer="acme-3",
            meter="users",
            timestamp="2026-11-19T18:29:59Z",
            properties={"user_id": "a"},
        ),
        event(
            "k2",
            "1",
            customer="acme-3",
            meter="users",
            timestamp="2026-11-19T18:30:00Z",
            properties={"user_id": "a"},
        ),
        event(
            "k3",
            "1",
            customer="acme-3",
            meter="users",
            timestamp="2026-11-19T20:00:00Z",
            properties={"user_id": "a"},
        ),
        event(
            "k4",
            "1",
            customer="acme-3",
            meter="users",
            timestamp="2026-11-20T18:29:00Z",
            properties={"user_id": "b"},
        ),
        event("k5", "2", customer="acme-3", timestamp="2026-11-19T18:29:59Z"),
        event("k6", "3", customer="acme-3", timestamp="2026-11-19T18:30:00Z"),
    ]
    await post_batch(client, metered, events)
    window = {"from": "2026-11-18T18:30:00Z", "to": "2026-11-20T18:30:00Z"}
    users = await usage(client, metered, "users", customer="acme-3", **window)
    assert [(b["start"], b["value"]) for b in users] == [
        ("2026-11-18T18:30:00Z", "1"),
        ("2026-11-19T18:30:00Z", "2"),
    ]
    calls = await usage(client, metered, "api_calls", customer="acme-3", **window)
    assert [b["value"] for b in calls] == ["2", "3"]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday", "to": "2026-11-21T00:00:00Z"},
        {"from": "2026-11-21T00:00:00Z", "to": "2026-11-20T00:00:00Z"},
        {"from": "2020-01-01T00:00:00Z", "to": "2026-11-21T00:00:00Z", "granularity": "hour"},
        {"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "granularity": "minute"},
    ],
)
async def test_a_bad_usage_query_answers_422(
    client: httpx.AsyncClient, metered: TenantHandle, params: dict
) -> None:
    response = await client.get(
        "/v1/customers/acme-1/usage", headers=metered.headers(), params={"meter": "api_calls", **params}
    )
    assert_problem(response, 422, "validation_error")


# On PostgreSQL these race on the unique constraint; on SQLite they are committed in groups.
async def test_the_same_event_posted_at_once_on_many_connections_is_accepted_once(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    bodies = await asyncio.gather(*[post_batch(client, metered, [event("racy", "7")]) for _ in range(20)])
    statuses = sorted(b["results"][0]["status"] for b in bodies)
    assert statuses == ["accepted"] + ["duplicate"] * 19
    assert total(await usage(client, metered)) == 7


async def test_concurrent_batches_on_the_same_rollups_lose_no_update(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    # Overlapping ids and rollup keys in opposite orders: a deadlock or a lost update would show.
    def batch(n: int) -> list[dict]:
        rows = [
            event(
                f"b{n}-{k}", "1.25", customer=f"acme-{k % 3 + 1}", timestamp=f"2026-11-21T{k % 4:02d}:00:00Z"
            )
            for k in range(200)
        ]
        rows += [event(f"shared-{k}", "1", timestamp="2026-11-21T05:00:00Z") for k in range(50)]
        return rows if n % 2 else rows[::-1]

    bodies = await asyncio.gather(*[post_batch(client, metered, batch(n)) for n in range(8)])
    assert sum(b["accepted"] for b in bodies) == 8 * 200 + 50
    totals = [total(await usage(client, metered, customer=f"acme-{c}")) for c in (1, 2, 3)]
    assert sum(totals) == Decimal("1.25") * 8 * 200 + 50


async def test_an_event_with_a_nul_character_is_rejected_alone(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    events = [
        event("nul-customer", customer="c\u0000"),
        event("nul-property", properties={"user\u0000": ["u\u0000"]}),
        event("nul-id\u0000"),
        event("fine"),
    ]
    body = await post_batch(client, metered, events)
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected", "rejected", "accepted"]
    assert {r["code"] for r in body["results"][:3]} == {"invalid_event"}
