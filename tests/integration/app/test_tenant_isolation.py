"""A key never sees another tenant's data: another tenant's id answers 404, like a missing one.

The test walks every route of the app that takes an id, so routes added later are covered as
soon as they exist; a path parameter without a maker below fails the test until one is added.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.routes import HTTPRoute

from billing import jobs
from billing.alerts import service as alerts
from billing.alerts.schemas import AlertCreate
from billing.core.context import AppContext
from billing.core.ids import new_id
from billing.credit_notes.models import CreditNote
from billing.credits import grants as credit_grants
from billing.credits.schemas import CreditGrantCreate
from billing.customers import service as customers
from billing.customers.schemas import CustomerCreate
from billing.dunning.models import DunningCase
from billing.invoicing import coupons, discounts, items, plans, subscriptions
from billing.invoicing.coupon_schemas import CouponCreate
from billing.invoicing.coverage import SUBSCRIPTION_COVERAGE
from billing.invoicing.item_schemas import InvoiceItemCreate
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.schemas import PlanCreate, SubscriptionCreate
from billing.metering import ingest, meters
from billing.metering.schemas import MeterCreate
from billing.payments.models import Payment
from billing.stripe_events.models import StripeEvent
from billing.tenants import service, tax_rates
from billing.tenants.schemas import TaxRateCreate
from billing.web.auth import Scope
from billing.webhooks import endpoints as webhook_endpoints
from billing.webhooks.models import WebhookDelivery
from billing.webhooks.schemas import EndpointCreate
from tests.conftest import TenantHandle

IdMaker = Callable[[AppContext, TenantHandle], Awaitable[str]]


async def _api_key(ctx: AppContext, owner: TenantHandle) -> str:
    async with ctx.database.transaction() as session:
        key, _ = await service.create_api_key(
            session, tenant_id=owner.id, scope=Scope.INGEST, name="victim", now=ctx.clock.now()
        )
    return key.id


async def _customer(ctx: AppContext, owner: TenantHandle) -> str:
    """A customer, subscribed since October, and a meter and a coupon for the routes under a
    customer that name one (see QUERIES and BODIES)."""
    now = ctx.clock.now()
    async with ctx.database.transaction() as session:
        customer = await customers.create_customer(
            session, owner.id, CustomerCreate(external_id="victim"), now=now
        )
        await meters.create_meter(
            session, owner.id, MeterCreate(key="victim_usage", aggregation="sum"), now=now
        )
        await coupons.create_coupon(session, owner.id, VICTIM_COUPON, now=now)
        await plans.create_plan(session, owner.id, PlanCreate(code="victim"), now=now)
        await subscriptions.create_subscription(
            session,
            owner.id,
            SubscriptionCreate(
                customer=customer.id, plan="victim", starts_at=datetime(2026, 10, 1, tzinfo=UTC)
            ),
            now=now,
        )
    return customer.id


VICTIM_COUPON = CouponCreate(code="victim", duration="forever", percent_off="10")


async def _coupon(ctx: AppContext, owner: TenantHandle) -> str:
    async with ctx.database.transaction() as session:
        coupon = await coupons.create_coupon(session, owner.id, VICTIM_COUPON, now=ctx.clock.now())
    return coupon.id


async def _discount(ctx: AppContext, owner: TenantHandle) -> str:
    """A discount of the customer ``_customer`` made (when the route names one), else of a new one."""
    async with ctx.database.read() as session:
        known = await customers.customers_by_reference(session, owner.id, {"victim"})
    customer_id = known.get("victim") or await _customer(ctx, owner)
    async with ctx.database.transaction() as session:
        customer = await customers.get_customer(session, owner.id, customer_id)
        discount = await discounts.create_discount(session, customer, "victim", now=ctx.clock.now())
    return discount.id


async def _plan(ctx: AppContext, owner: TenantHandle) -> str:
    async with ctx.database.transaction() as session:
        plan = await plans.create_plan(session, owner.id, PlanCreate(code="victim"), now=ctx.clock.now())
    return plan.id


async def _subscription(ctx: AppContext, owner: TenantHandle) -> str:
    """The customer's subscription, with a seat change waiting (so it has a pending change to delete)."""
    customer_id = await _customer(ctx, owner)
    seats = [
        {"from": "2026-10-01T00:00:00Z", "quantity": 1},
        {"from": "2099-01-01T00:00:00Z", "quantity": 2},
    ]
    async with ctx.database.transaction() as session:
        query = sa.select(Subscription).where(Subscription.customer_id == customer_id)
        subscription = (await session.scalars(query)).one()
        subscription.quantities = seats
        return subscription.id


async def _invoice(ctx: AppContext, owner: TenantHandle) -> str:
    await _customer(ctx, owner)
    await jobs.run_jobs(ctx, jobs.Run(at=datetime(2026, 11, 1, tzinfo=UTC), tenant_id=owner.id))
    async with ctx.database.read() as session:
        return (await session.scalars(sa.select(Invoice.id).where(Invoice.tenant_id == owner.id))).one()


async def _invoice_item(ctx: AppContext, owner: TenantHandle) -> str:
    """A pending item, so that deleting it is allowed."""
    customer_id = await _customer(ctx, owner)
    data = InvoiceItemCreate(customer=customer_id, description="Setup", amount=5000)
    async with ctx.database.transaction() as session:
        item = await items.create_item(session, owner.id, data, now=ctx.clock.now())
    return item.id


async def _payment(ctx: AppContext, owner: TenantHandle) -> str:
    """A failed first charge (the customer has no payment method) of a finalized invoice."""
    now = ctx.clock.now()
    async with ctx.database.transaction() as session:
        customer = await customers.create_customer(
            session, owner.id, CustomerCreate(external_id="payer"), now=now
        )
        await plans.create_plan(session, owner.id, PlanCreate(code="paid", base_fee=100), now=now)
        start = datetime(2026, 10, 1, tzinfo=UTC)
        subscription = SubscriptionCreate(customer=customer.id, plan="paid", starts_at=start)
        await subscriptions.create_subscription(session, owner.id, subscription, now=now)
    await jobs.run_jobs(ctx, jobs.Run(at=datetime(2026, 11, 3, tzinfo=UTC), tenant_id=owner.id))
    async with ctx.database.read() as session:
        return (await session.scalars(sa.select(Payment.id).where(Payment.tenant_id == owner.id))).one()


async def _case(ctx: AppContext, owner: TenantHandle) -> str:
    """The dunning case the failed charge of ``_payment`` opened."""
    await _payment(ctx, owner)
    await jobs.dispatch_outbox(ctx, at=datetime(2026, 11, 3, tzinfo=UTC))
    async with ctx.database.read() as session:
        return (
            await session.scalars(sa.select(DunningCase.id).where(DunningCase.tenant_id == owner.id))
        ).one()


async def _stored_stripe_event(ctx: AppContext, owner: TenantHandle) -> str:
    """A failed Stripe event, so that reprocessing it is allowed."""
    now = ctx.clock.now()
    row = StripeEvent(
        id=new_id("ste"),
        tenant_id=owner.id,
        stripe_event_id="evt_victim",
        type="customer.source.expiring",
        livemode=False,
        created_at=now,
        payload=b"{}",
        status="failed",
        attempts=10,
        received_at=now,
        next_attempt_at=now,
    )
    async with ctx.database.transaction() as session:
        session.add(row)
    return row.id


async def _meter(ctx: AppContext, owner: TenantHandle) -> str:
    async with ctx.database.transaction() as session:
        meter = await meters.create_meter(
            session, owner.id, MeterCreate(key="victim", aggregation="sum"), now=ctx.clock.now()
        )
    return meter.id


async def _event(ctx: AppContext, owner: TenantHandle) -> str:
    customer_id = await _customer(ctx, owner)
    raw = msgspec.json.encode(
        {
            "id": "victim-event",
            "customer": customer_id,
            "meter": "victim_usage",
            "timestamp": "2026-11-21T11:00:00Z",
        }
    )
    result = await ingest.ingest(
        ctx.database, owner.id, [raw], now=ctx.clock.now(), coverage=SUBSCRIPTION_COVERAGE
    )
    assert result.accepted == 1
    return "victim-event"


async def _tax_rate(ctx: AppContext, owner: TenantHandle) -> str:
    data = TaxRateCreate(display_name="VAT", percentage="19", inclusive=False, country="DE")
    async with ctx.database.transaction() as session:
        rate = await tax_rates.create_tax_rate(session, owner.id, data, now=ctx.clock.now())
    return rate.id


async def _webhook_endpoint(ctx: AppContext, owner: TenantHandle) -> str:
    """An endpoint nobody listens on (its retry route fails fast, connection refused)."""
    data = EndpointCreate(url="http://127.0.0.1:9/victim", events=["*"])
    async with ctx.database.transaction() as session:
        endpoint, _ = await webhook_endpoints.create_endpoint(
            session, owner.id, data, box=ctx.box, now=ctx.clock.now(), production=False
        )
    return endpoint.id


async def _webhook_delivery(ctx: AppContext, owner: TenantHandle) -> str:
    endpoint_id = await _webhook_endpoint(ctx, owner)
    now = ctx.clock.now()
    delivery = WebhookDelivery(
        id=f"whd_victim{endpoint_id[4:]}",
        tenant_id=owner.id,
        endpoint_id=endpoint_id,
        event_id="evt_victim",
        event_type="invoice.paid",
        body="{}",
        status="failed",
        attempt_count=1,
        created_at=now,
        next_attempt_at=now,
        retry_until=now,
        failed_at=now,
    )
    async with ctx.database.transaction() as session:
        session.add(delivery)
    return delivery.id


async def _credit_grant(ctx: AppContext, owner: TenantHandle) -> str:
    """An active promotional grant, so that voiding it is allowed."""
    customer_id = await _customer(ctx, owner)
    data = CreditGrantCreate(name="Victim", amount=100, category="promotional")
    async with ctx.database.transaction() as session:
        customer = await customers.get_customer(session, owner.id, customer_id)
        grant = await credit_grants.new_grant(session, customer, data, now=ctx.clock.now())
        await credit_grants.add_grant(session, grant, now=ctx.clock.now())
    return grant.id


async def _credit_note(ctx: AppContext, owner: TenantHandle) -> str:
    """A credit note row on the owner's invoice (its amounts do not matter to a lookup)."""
    invoice_id = await _invoice(ctx, owner)
    async with ctx.database.transaction() as session:
        invoice = await session.get_one(Invoice, invoice_id)
        note = CreditNote(
            id=new_id("cn"),
            tenant_id=owner.id,
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            number="CN-VICTIM-000001",
            currency=invoice.currency,
            reason="other",
            refund="none",
            status="issued",
            subtotal=100,
            tax_total=0,
            total=100,
            pre_payment_amount=100,
            post_payment_amount=0,
            created_at=ctx.clock.now(),
        )
        session.add(note)
    return note.id


async def _alert(ctx: AppContext, owner: TenantHandle) -> str:
    data = AlertCreate(type="spend_amount", thresholds=[100], currency="USD")
    async with ctx.database.transaction() as session:
        alert = await alerts.create_alert(session, owner.id, data, ctx.clock.now())
    return alert.id


# How to create, in the owner's tenant, the object that each path parameter names.
ID_MAKERS: dict[str, IdMaker] = {
    "key_id": _api_key,
    "customer_id": _customer,
    "meter_id": _meter,
    "event_id": _event,
    "plan_id": _plan,
    "subscription_id": _subscription,
    "invoice_id": _invoice,
    "item_id": _invoice_item,
    "coupon": _coupon,
    "discount_id": _discount,
    "payment_id": _payment,
    "case_id": _case,
    "stored_event_id": _stored_stripe_event,
    "endpoint_id": _webhook_endpoint,
    "delivery_id": _webhook_delivery,
    "credit_note_id": _credit_note,
    "tax_rate_id": _tax_rate,
    "grant_id": _credit_grant,
    "alert_id": _alert,
}
# Path parameters that name no object of a tenant (the same for every tenant): not walked.
NOT_IDS = frozenset({"kind"})  # /v1/notifications/preview/{kind}
# A valid body for routes that need one, so that validation cannot answer before the lookup.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/customers/{customer_id:str}"): {"name": "Renamed"},
    ("POST", "/v1/customers/{customer_id:str}/credit-grants"): {
        "name": "Credit",
        "category": "promotional",
        "amount": 100,
    },
    ("PATCH", "/v1/meters/{meter_id:str}"): {"name": "Renamed"},
    ("PATCH", "/v1/tax-rates/{tax_rate_id:str}"): {"display_name": "Renamed"},
    ("PATCH", "/v1/plans/{plan_id:str}"): {"name": "Renamed"},
    ("PATCH", "/v1/coupons/{coupon:str}"): {"name": "Renamed"},
    ("POST", "/v1/customers/{customer_id:str}/discounts"): {"coupon": "victim"},
    ("POST", "/v1/subscriptions/{subscription_id:str}/cancel"): {"at": None},
    ("PATCH", "/v1/subscriptions/{subscription_id:str}"): {"metadata": {"k": "v"}},
    ("POST", "/v1/invoices/{invoice_id:str}/refund"): {"amount": None},
    ("POST", "/v1/invoices/{invoice_id:str}/credit-notes"): {
        "amount": 1,
        "reason": "other",
        "refund": "none",
    },
    ("PATCH", "/v1/invoices/{invoice_id:str}"): {"metadata": {"order": "42"}},
    ("PATCH", "/v1/webhook-endpoints/{endpoint_id:str}"): {"description": "Renamed"},
    ("POST", "/v1/webhook-endpoints/{endpoint_id:str}/rotate-secret"): {"expire_previous_in_seconds": 0},
}
# Query parameters for routes that require some.
QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/v1/customers/{customer_id:str}/usage"): {
        "meter": "victim_usage",
        "from": "2026-11-20T00:00:00Z",
        "to": "2026-11-21T00:00:00Z",
    },
}


@dataclass(frozen=True)
class IdRoute:
    method: str
    template: str
    params: tuple[str, ...]

    def path(self, ids: dict[str, str]) -> str:
        path = self.template
        for name in self.params:
            path = path.replace(f"{{{name}:str}}", ids[name]).replace(f"{{{name}}}", ids[name])
        return path


def id_routes(app: Litestar) -> list[IdRoute]:
    routes = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/v1/"):
            continue
        params = tuple(p for p in route.path_parameters if p not in NOT_IDS)
        if not params:
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            routes.append(IdRoute(method, route.path, params))
    return routes


def test_every_id_route_has_a_maker(app: Litestar) -> None:
    routes = id_routes(app)
    assert routes, "the walk found no route with an id: the introspection is broken"
    missing = sorted({p for r in routes for p in r.params} - ID_MAKERS.keys())
    assert not missing, f"add a maker to ID_MAKERS for path parameters {missing}"


async def test_another_tenants_id_answers_404_on_every_route(
    app: Litestar,
    ctx: AppContext,
    client: httpx.AsyncClient,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
) -> None:
    attacker = await make_tenant(name="Attacker")
    checked = 0
    for route in id_routes(app):
        owner = await make_tenant(name="Owner")
        ids = {name: await ID_MAKERS[name](ctx, owner) for name in route.params}
        body = BODIES.get((route.method, route.template))
        kwargs: dict[str, Any] = {"params": QUERIES.get((route.method, route.template), {})}
        if route.method in {"POST", "PUT", "PATCH"}:
            kwargs["json"] = body

        foreign = await client.request(route.method, route.path(ids), headers=attacker.headers(), **kwargs)
        assert foreign.status_code == 404, (
            f"{route.method} {route.template}: {foreign.status_code} {foreign.text}"
        )
        assert foreign.json()["code"] == "not_found"

        own = await client.request(route.method, route.path(ids), headers=owner.headers(), **kwargs)
        assert own.status_code != 404, f"{route.method} {route.template}: the owner's own id is not found"
        checked += 1
    assert checked == len(id_routes(app)) > 0


@pytest.mark.parametrize("path", ["/v1/api-keys/key_doesnotexist00000000000000"])
async def test_a_missing_id_answers_the_same_404(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str
) -> None:
    response = await client.get(path, headers=tenant.headers())
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
