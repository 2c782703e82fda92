"""``create_app(settings)``: routes, auth, error handlers, OpenAPI, metrics and the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from billing import jobs
from billing.alerts.routes import AlertController
from billing.billing_run import BillingRunController
from billing.core.clock import Clock
from billing.core.context import AppContext
from billing.core.errors import EXCEPTION_HANDLERS
from billing.core.logs import configure_logging
from billing.core.scheduler import Scheduler
from billing.core.settings import Settings
from billing.credit_notes.routes import CreditNoteController, InvoiceCreditNoteController
from billing.customers.routes import CustomerController
from billing.dunning.customer_ports import CUSTOMER_PORTS
from billing.dunning.routes import DunningController
from billing.finance.routes import finance_router
from billing.invoicing.coupon_routes import CouponController, CustomerDiscountController
from billing.invoicing.coverage import SUBSCRIPTION_COVERAGE
from billing.invoicing.credit_grant_routes import CreditGrantController, CustomerCreditController
from billing.invoicing.item_routes import InvoiceItemController
from billing.invoicing.routes import (
    InvoiceController,
    PlanController,
    SubscriptionController,
    UpcomingInvoiceController,
)
from billing.metering.event_routes import EventController
from billing.metering.routes import MeterController
from billing.metering.usage_routes import UsageController
from billing.notifications.routes import NotificationController
from billing.payments.routes import InvoicePaymentController, PaymentController
from billing.payments.views import PAYMENTS
from billing.stripe_events.receiver import StripeWebhookController
from billing.stripe_events.routes import StripeEventController
from billing.tenants.routes import ApiKeyController, TenantController
from billing.tenants.service import principal_for_key
from billing.tenants.tax_rate_routes import TaxRateController
from billing.web.auth import ApiKeyMiddleware, scope_guard
from billing.web.dependencies import provide_context, provide_principal
from billing.web.health import HealthController
from billing.web.idempotency import IdempotencyMiddleware
from billing.web.openapi import document_problems
from billing.web.options import answer_options, record_allowed_methods
from billing.web.request_context import request_context_middleware
from billing.webhooks.routes import WebhookDeliveryController, WebhookEndpointController

API_ROUTES = [
    TenantController,
    ApiKeyController,
    TaxRateController,
    CustomerController,
    MeterController,
    UsageController,
    EventController,
    PlanController,
    SubscriptionController,
    InvoiceController,
    InvoiceItemController,
    CouponController,
    CustomerDiscountController,
    CreditGrantController,
    CustomerCreditController,
    InvoicePaymentController,
    PaymentController,
    InvoiceCreditNoteController,
    CreditNoteController,
    UpcomingInvoiceController,
    AlertController,
    BillingRunController,
    DunningController,
    StripeEventController,
    WebhookEndpointController,
    WebhookDeliveryController,
    NotificationController,
]


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def _openapi() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Billing",
        version="1.0.0",
        description="Usage-based billing and dunning. Amounts are integers in minor units; "
        "quantities and unit prices are decimal strings.",
        path="/schema",
        render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), SwaggerRenderPlugin(path="/docs")],
        components=Components(
            security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer", description="API key")}
        ),
        security=[{"apiKey": []}],
    )


def create_app(settings: Settings, *, clock: Clock | None = None, scheduler: bool | None = None) -> Litestar:
    """Build the app; ``clock`` and ``scheduler`` let tests freeze time and keep ticks manual."""
    configure_logging(settings.log_level, settings.log_format)
    run_scheduler = settings.scheduler if scheduler is None else scheduler
    app = build_app(max_body_bytes=settings.max_body_bytes, scheduler=run_scheduler)
    use_context(app, AppContext.create(settings, clock=clock))
    return app


def build_app(*, max_body_bytes: int, scheduler: bool) -> Litestar:
    """Routes, auth, error handlers, OpenAPI and metrics, without a context (``use_context``):
    handlers find theirs in the app's state when they run."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ctx: AppContext = app.state.ctx
        ticks = Scheduler(ctx, jobs.ticks()) if scheduler else None
        if ticks is not None:
            ticks.start()
        try:
            yield
        finally:
            if ticks is not None:
                ticks.shutdown()
            await ctx.close()

    api = Router(
        path="/v1",
        route_handlers=API_ROUTES,
        # Authentication first: an idempotency key belongs to the caller's tenant.
        middleware=[DefineMiddleware(ApiKeyMiddleware, find_key=principal_for_key), IdempotencyMiddleware],
        guards=[scope_guard],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            # The interfaces lower domains own, filled in by the domains above them.
            "coverage": Provide(lambda: SUBSCRIPTION_COVERAGE, sync_to_thread=False, use_cache=True),
            "customer_ports": Provide(lambda: CUSTOMER_PORTS, sync_to_thread=False, use_cache=True),
            "invoice_payments": Provide(lambda: PAYMENTS, sync_to_thread=False, use_cache=True),
        },
    )
    metrics = PrometheusConfig(app_name="billing", prefix="billing", group_path=True, exclude=["/metrics"])
    app = Litestar(
        route_handlers=[api, finance_router(), HealthController, MetricsController, StripeWebhookController],
        dependencies={"ctx": Provide(provide_context, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[metrics.middleware],
        before_request=answer_options,
        openapi_config=_openapi(),
        lifespan=[lifespan],
        request_max_body_size=max_body_bytes,
        debug=False,
        logging_config=None,
    )
    document_problems(app)
    record_allowed_methods(app)
    # Outermost, so that errors raised by any middleware (401s) and unrouted paths get an id too.
    app.asgi_handler = request_context_middleware(app.asgi_handler)
    return app


def use_context(app: Litestar, ctx: AppContext) -> None:
    """The context (settings, clock, database) that the app's handlers and lifespan use."""
    app.state.ctx = ctx
    app.state.database = ctx.database
