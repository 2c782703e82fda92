"""GET/PATCH /v1/tenant: settings, validation that changes nothing, write-only encrypted secrets."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.tenants import service
from billing.tenants.models import Tenant
from tests.conftest import TenantHandle
from tests.factories import TenantPatchFactory
from tests.integration.web.test_auth import assert_problem

STRIPE_KEY = "sk_test_51Pabcdefghijklmnopqrstuvwxyz0123456789"
WEBHOOK_SECRETS = ["whsec_oldoldoldoldoldold0123456789", "whsec_newnewnewnewnewnew0123456789"]


async def test_a_new_tenant_has_the_documented_defaults(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    body = (await client.get("/v1/tenant", headers=tenant.headers())).json()
    assert body["id"] == tenant.id and body["id"].startswith("ten_")
    assert body["billing_timezone"] == "UTC"
    assert body["grace_period_hours"] == 24
    assert body["payment_provider"] == "sandbox"
    assert body["stripe_secret_key_set"] is False
    assert body["stripe_webhook_secrets_count"] == 0
    assert body["stripe_livemode"] is False
    assert body["created_at"] == "2026-11-21T12:00:00Z"


async def test_patch_sets_every_documented_setting(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    patch = {
        "name": "Acme GmbH",
        "support_email": "billing@acme.example",
        "billing_timezone": "Asia/Kathmandu",
        "grace_period_hours": 48,
        "update_payment_method_url": "https://acme.example/billing/card",
        "email_from": "noreply@acme.example",
        "stripe_livemode": True,
    }
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json=patch)
    assert response.status_code == 200, response.text
    body = (await client.get("/v1/tenant", headers=tenant.headers())).json()
    for field, value in patch.items():
        assert body[field] == value


async def test_secrets_are_write_only_and_encrypted_at_rest(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    response = await client.patch(
        "/v1/tenant",
        headers=tenant.headers(),
        json={
            "stripe_secret_key": STRIPE_KEY,
            "stripe_webhook_secrets": WEBHOOK_SECRETS,
            "payment_provider": "stripe",
        },
    )
    assert response.status_code == 200, response.text
    for secret in [STRIPE_KEY, *WEBHOOK_SECRETS]:
        assert secret not in response.text
    body = response.json()
    assert body["stripe_secret_key_set"] is True
    assert body["stripe_webhook_secrets_count"] == 2
    assert body["payment_provider"] == "stripe"

    async with ctx.database.read() as session:
        row = (await session.execute(sa.select(Tenant).where(Tenant.id == tenant.id))).scalar_one()
        raw = (
            await session.execute(sa.text("SELECT * FROM tenants WHERE id = :id"), {"id": tenant.id})
        ).one()
    assert all(secret not in str(tuple(raw)) for secret in [STRIPE_KEY, *WEBHOOK_SECRETS])
    assert service.stripe_secret_key(row, ctx.box) == STRIPE_KEY
    assert service.stripe_webhook_secrets(row, ctx.box) == WEBHOOK_SECRETS


async def test_null_clears_a_secret(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await client.patch("/v1/tenant", headers=tenant.headers(), json={"stripe_secret_key": STRIPE_KEY})
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json={"stripe_secret_key": None})
    assert response.json()["stripe_secret_key_set"] is False


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"billing_timezone": "Mars/Olympus_Mons"}, "billing_timezone"),
        ({"billing_timezone": "../../etc/passwd"}, "billing_timezone"),
        ({"grace_period_hours": -1}, "grace_period_hours"),
        ({"grace_period_hours": 100000}, "grace_period_hours"),
        ({"support_email": "not-an-email"}, "support_email"),
        ({"payment_provider": "paypal"}, "payment_provider"),
        ({"payment_provider": "stripe"}, "payment_provider"),
        ({"stripe_secret_key": "pk_test_publishablekey123"}, "stripe_secret_key"),
        ({"stripe_webhook_secrets": ["not-a-secret"]}, "stripe_webhook_secrets[0]"),
        ({"stripe_webhook_secrets": ["whsec_abcdefghijk"] * 6}, "stripe_webhook_secrets"),
        ({"update_payment_method_url": "javascript:alert(1)"}, "update_payment_method_url"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"grace_period_hours": "24h"}, "grace_period_hours"),
    ],
)
async def test_an_invalid_patch_answers_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, patch: dict, field: str
) -> None:
    before = (await client.get("/v1/tenant", headers=tenant.headers())).json()
    # A valid change beside the invalid one must not be applied either.
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json={"name": "Changed", **patch})
    body = assert_problem(response, 422, "validation_error")
    assert field in {error["field"] for error in body["errors"]}
    assert (await client.get("/v1/tenant", headers=tenant.headers())).json() == before


async def test_an_unknown_field_is_rejected(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json={"currency_symbol": "$"})
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "currency_symbol"


@pytest.mark.parametrize("body", [b"{", b"{'name': 1}", b"\xff\xfe", b"[1, 2"])
async def test_malformed_json_answers_400(
    client: httpx.AsyncClient, tenant: TenantHandle, body: bytes
) -> None:
    headers = {**tenant.headers(), "content-type": "application/json"}
    response = await client.patch("/v1/tenant", headers=headers, content=body)
    assert_problem(response, 400, "malformed_json")


async def test_a_body_over_the_limit_answers_413(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    oversized = b'{"name": "' + b"a" * (1024 * 1024) + b'"}'
    headers = {**tenant.headers(), "content-type": "application/json"}
    response = await client.patch("/v1/tenant", headers=headers, content=oversized)
    assert_problem(response, 413, "payload_too_large")


async def test_generated_valid_patches_round_trip(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    for patch in TenantPatchFactory.batch(5):
        response = await client.patch("/v1/tenant", headers=tenant.headers(), json=patch)
        assert response.status_code == 200, (patch, response.text)
        body = response.json()
        assert {k: body[k] for k in patch} == patch
