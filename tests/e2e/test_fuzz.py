"""Property-based fuzzing of every operation in ``/schema`` against a real ``billing serve``.

Schemathesis generates requests from the OpenAPI document, authenticated with an admin key, and
checks every answer: never a 5xx, and always a documented status code, content type, headers and
body. Each request is also sent as OPTIONS (which the document leaves out: every route answers
it), to be answered 204 with an ``Allow`` header listing the path's documented methods. One server
per database (SQLite, and PostgreSQL when BILLING_TEST_POSTGRES_URL is set), seeded with a
customer, a meter, a plan, a subscription, invoices, payments, a dunning case, notifications, a
Stripe event and a webhook endpoint, so that id-taking operations reach real objects about half of
the time.

Bounded for ``make test`` (derandomized, BILLING_FUZZ_EXAMPLES examples per operation, default
8); ``bench/README.md`` documents the long run.

Nothing leaves the machine: the scheduler is off, the Stripe adapter points at a closed loopback
port, and a generated webhook URL whose host is not a loopback address is replaced by the local
receiver's (the fuzzer keeps its malformed URLs).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing.core.clock import SystemClock
from billing.notifications.queue import ALL_KINDS
from billing.webhooks.targets import is_loopback
from tests import stripe_payloads as sp
from tests.conftest import DIALECTS
from tests.e2e.test_serve import Server, free_port, run_cli
from tests.fakes.webhook_receiver import running_receiver

EXAMPLES = int(os.environ.get("BILLING_FUZZ_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STRIPE_SECRET = "whsec_fuzz_0123456789abcdef"
REVOKE = "/v1/api-keys/{key_id}/revoke"
WEBHOOK_ENDPOINTS = "/v1/webhook-endpoints"


def _server_env(closed_port: int) -> dict[str, str]:
    return {
        "BILLING_SCHEDULER": "off",
        "BILLING_LOG_LEVEL": "warning",
        "BILLING_STRIPE_API_BASE": f"http://127.0.0.1:{closed_port}",
        "BILLING_STRIPE_TIMEOUT_SECONDS": "2",
        "BILLING_STRIPE_MAX_NETWORK_RETRIES": "0",
    }


@dataclass
class FuzzTarget:
    base_url: str
    admin_key: str
    admin_key_id: str
    spare_key_id: str
    receiver_url: str
    ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def prepare(self, case: Any) -> None:
        """Point some ids at real objects; keep the fuzzer's key alive and its traffic local."""
        params = case.path_parameters or {}
        for name, value in params.items():
            real = self.ids.get(name)
            pick = zlib.crc32(repr(value).encode())
            if real and pick % 2 == 0:
                params[name] = real[pick // 2 % len(real)]
        if case.operation.path == REVOKE and params.get("key_id") == self.admin_key_id:
            params["key_id"] = self.spare_key_id
        if case.operation.path.startswith(WEBHOOK_ENDPOINTS) and isinstance(case.body, dict):
            case.body = self._local_url(case.body)

    def _local_url(self, body: dict[str, Any]) -> dict[str, Any]:
        url = body.get("url")
        try:
            host = urlsplit(url).hostname if isinstance(url, str) else None
        except ValueError:
            return body
        if host and not is_loopback(host.rstrip(".")):
            return {**body, "url": self.receiver_url}
        return body


def _cli_json(data_dir: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_cli(data_dir, *args, "--json", **env).stdout)
    return result


@pytest.fixture(scope="module", params=DIALECTS)
def fuzz_target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fresh_postgres_database: Callable[[], str],
) -> Iterator[FuzzTarget]:
    env = _server_env(free_port())
    if request.param == "postgresql":
        env["BILLING_DATABASE_URL"] = fresh_postgres_database()
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    run_cli(data_dir, "migrate", **env)
    tenant = _cli_json(data_dir, env, "tenant", "create", "--name", "Fuzz")
    spare = _cli_json(data_dir, env, "api-key", "create", "--tenant", tenant["tenant_id"], "--scope", "admin")
    with running_receiver() as receiver:
        server = Server(data_dir, **env)
        try:
            server.wait_ready()
            target = FuzzTarget(
                base_url=server.base_url,
                admin_key=tenant["api_key"],
                admin_key_id=tenant["api_key_id"],
                spare_key_id=spare["api_key_id"],
                receiver_url=receiver.url,
            )
            with httpx.Client(base_url=server.base_url, headers=target.auth, timeout=30) as client:
                target.ids = seed(client, tenant["tenant_id"], receiver.url)
            target.ids["key_id"] = [target.spare_key_id, target.admin_key_id]
            yield target
            assert "Traceback" not in server.stderr, server.stderr
        finally:
            server.kill()


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.is_success, f"{response.request.method} {response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


def seed(client: httpx.Client, tenant_id: str, receiver_url: str) -> dict[str, list[str]]:
    """Objects of every kind the API can address, made through the API; their ids by path name."""
    now = SystemClock().now()  # the server runs on the wall clock
    three_months_ago = (now.replace(day=1) - timedelta(days=80)).replace(day=1, hour=0, minute=0, second=0)
    customer = _ok(client.post("/v1/customers", json={
        "external_id": "acme-42", "email": "billing@acme.example", "currency": "USD",
        "provider_customer_id": "cus_Stripe42", "default_payment_method": "pm_card_chargeDeclined",
    }))  # fmt: skip
    meter = _ok(
        client.post("/v1/meters", json={"key": "api_calls", "name": "API calls", "aggregation": "sum"})
    )
    plan = _ok(client.post("/v1/plans", json={
        "code": "pro", "name": "Pro", "currency": "USD", "base_fee": 4900,
        "prices": [{"meter": "api_calls", "model": "per_unit", "unit_amount": "0.002"}],
    }))  # fmt: skip
    subscription = _ok(client.post("/v1/subscriptions", json={
        "customer": "acme-42", "plan": "pro", "starts_at": three_months_ago.isoformat(),
    }))  # fmt: skip
    event_time = (now - timedelta(hours=1)).isoformat()
    event = {"id": "evt-seed-1", "customer": "acme-42", "meter": "api_calls", "timestamp": event_time}
    _ok(client.post("/v1/events", json=event | {"value": "12.5"}))
    endpoint = _ok(client.post("/v1/webhook-endpoints", json={
        "url": receiver_url, "events": ["invoice.finalized", "invoice.payment_failed"],
    }))  # fmt: skip
    _ok(client.patch("/v1/tenant", json={"stripe_webhook_secrets": [STRIPE_SECRET]}))
    payload = sp.encode(sp.event("customer.source.expiring", sp.card("cus_Stripe42")))
    signature = sp.signature_header(payload, STRIPE_SECRET, int(now.timestamp()))
    stripe_headers = {"Stripe-Signature": signature, "content-type": "application/json"}
    _ok(client.post(f"/webhooks/stripe/{tenant_id}", content=payload, headers=stripe_headers))
    _ok(client.post("/v1/billing/run", json={}))  # closes the past periods: invoices, failed charges, dunning
    return {
        "customer_id": [customer["id"], "acme-42"],
        "meter_id": [meter["id"]],
        "plan_id": [plan["id"], "pro"],
        "subscription_id": [subscription["id"]],
        "event_id": ["evt-seed-1"],
        "invoice_id": _listed(client, "/v1/invoices"),
        "payment_id": _listed(client, "/v1/payments"),
        "case_id": _listed(client, "/v1/dunning/cases"),
        "stored_event_id": _listed(client, "/v1/stripe-events"),
        "endpoint_id": [endpoint["id"]],
        "delivery_id": _listed(client, f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"),
        "kind": list(ALL_KINDS),
    }


def _listed(client: httpx.Client, path: str) -> list[str]:
    ids = [item["id"] for item in _ok(client.get(path, params={"limit": 100}))["data"]]
    assert ids, f"seeding made nothing for {path}"
    return ids


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def options_answered(ctx: Any, response: Any, case: Any) -> None:
    """OPTIONS on a path that is routed: 204 and an ``Allow`` header (that lists the path's
    documented methods: ``allow_header_conformance``)."""
    if response.status_code != 404:
        assert response.status_code == 204, f"OPTIONS answered {response.status_code}, not 204"
        assert response.headers.get("allow"), "OPTIONS answered without an Allow header"


OPTIONS_CHECKS = [not_a_server_error, options_answered, allow_header_conformance]


def fuzz(target: FuzzTarget, operation: Any) -> None:
    """Valid and invalid requests for one operation, each also sent as OPTIONS; raises on the first
    (shrunk) failure."""
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    @SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        target.prepare(case)
        case.call_and_validate(headers=target.auth, checks=CHECKS, timeout=30)
        options = operation.Case(method="OPTIONS", path_parameters=case.path_parameters, query=case.query)
        options.call_and_validate(headers=target.auth, checks=OPTIONS_CHECKS, timeout=30)

    run()


def test_every_operation_answers_within_its_schema_and_never_5xx(fuzz_target: FuzzTarget) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_target.base_url}/schema/openapi.json")
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            fuzz(fuzz_target, operation)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    assert operations > 40, f"only {operations} operations in /schema"
    assert not failures, f"{len(failures)} of {operations} operations failed:\n\n" + "\n\n".join(failures)
