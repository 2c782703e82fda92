"""What the demo tenant sells: six meters, and four plans that use all five price models, a
launch coupon, and the German VAT it charges German customers (it is registered there).

The AI Platform plan shows dimensions and progressive billing: LLM tokens priced per model and
direction (the matching price with the most filter keys wins, the unfiltered price lists the
remaining models one line each), a card-processing fee on payments, and a threshold invoice each
time a month's usage passes a multiple of its ``threshold_amount``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.coupon_schemas import CouponCreate
from billing.invoicing.coupons import create_coupon
from billing.invoicing.plans import create_plan
from billing.invoicing.schemas import PlanCreate, PriceIn, TierIn
from billing.metering.meters import create_meter
from billing.metering.schemas import MeterCreate
from billing.tenants.schemas import TaxRateCreate, TenantPatch
from billing.tenants.tax_rates import create_tax_rate

API_CALLS, STORAGE, SEATS, EXPORTS = "api_calls", "storage_gb_hours", "seats", "exports"
AI_TOKENS, PAYMENTS = "ai_tokens", "payment_volume"
MODEL, DIRECTION = "model", "direction"

METERS = [
    MeterCreate(key=API_CALLS, name="API calls", aggregation="sum", unit="call"),
    MeterCreate(key=STORAGE, name="Storage", aggregation="sum", unit="GB-hour"),
    MeterCreate(key=SEATS, name="Seats", aggregation="max", unit="seat"),
    MeterCreate(key=EXPORTS, name="Report exports", aggregation="count", unit="export"),
    MeterCreate(
        key=AI_TOKENS, name="AI tokens", aggregation="sum", unit="token", group_by=[MODEL, DIRECTION]
    ),
    MeterCreate(key=PAYMENTS, name="Payments", aggregation="sum", unit="USD"),
]

_EXPORT_PACKS = PriceIn(meter=EXPORTS, model="package", package_size="50", package_amount=500)
_STORAGE_TIERS = PriceIn(
    meter=STORAGE,
    model="graduated",
    tiers=[
        TierIn(up_to="1000", unit_amount="0"),
        TierIn(up_to="25000", unit_amount="0.004"),
        TierIn(up_to=None, unit_amount="0.0025"),
    ],
)
_SEAT_VOLUME = PriceIn(
    meter=SEATS,
    model="volume",
    tiers=[
        TierIn(up_to="10", unit_amount="12"),
        TierIn(up_to="50", unit_amount="10"),
        TierIn(up_to=None, unit_amount="8", flat_amount=5000),
    ],
)

# Per token, in dollars ($10, $2.50, $0.30 and $1 a million tokens): gpt-4o output (two filter
# keys) wins over gpt-4o (one key), which so gets only its input tokens; the unfiltered price
# bills every other model, a line per model.
AI_TOKEN_PRICES = [
    PriceIn(
        meter=AI_TOKENS,
        model="per_unit",
        unit_amount="0.00001",
        filters={MODEL: ["gpt-4o"], DIRECTION: ["output"]},
    ),
    PriceIn(meter=AI_TOKENS, model="per_unit", unit_amount="0.0000025", filters={MODEL: ["gpt-4o"]}),
    PriceIn(meter=AI_TOKENS, model="per_unit", unit_amount="0.0000003", filters={MODEL: ["gpt-4o-mini"]}),
    PriceIn(meter=AI_TOKENS, model="per_unit", unit_amount="0.000001", group_by=[MODEL]),
]
# Card processing: 2.9% + 30 cents a payment, at most $25 a payment.
PAYMENT_FEES = PriceIn(
    meter=PAYMENTS, model="percentage", rate="2.9", fixed_amount_per_event=30, maximum_per_event=2500
)
AI_THRESHOLD = 50_000  # a threshold invoice at every $500 of usage in a month

PLANS = [
    PlanCreate(
        code="starter",
        name="Starter",
        base_fee=1900,
        prices=[PriceIn(meter=API_CALLS, model="per_unit", unit_amount="0.0002"), _EXPORT_PACKS],
    ),
    PlanCreate(
        code="growth",
        name="Growth",
        base_fee=4900,
        prices=[
            PriceIn(meter=API_CALLS, model="per_unit", unit_amount="0.00012"),
            _STORAGE_TIERS,
            _SEAT_VOLUME,
            _EXPORT_PACKS,
        ],
    ),
    PlanCreate(
        code="scale",
        name="Scale",
        base_fee=29900,
        prices=[
            PriceIn(
                meter=API_CALLS,
                model="graduated",
                tiers=[
                    TierIn(up_to="1000000", unit_amount="0"),
                    TierIn(up_to="10000000", unit_amount="0.00008", flat_amount=2500),
                    TierIn(up_to=None, unit_amount="0.00005"),
                ],
            ),
            _STORAGE_TIERS,
            _SEAT_VOLUME,
        ],
    ),
    PlanCreate(
        code="ai",
        name="AI Platform",
        base_fee=4900,
        prices=[*AI_TOKEN_PRICES, PAYMENT_FEES],
        threshold_amount=AI_THRESHOLD,
    ),
]

# The meters each plan's customers send usage for.
PLAN_METERS = {plan.code: {price.meter for price in plan.prices} for plan in PLANS}
THRESHOLD_PLANS = {plan.code for plan in PLANS if plan.threshold_amount is not None}

COUPON_CODE = "LAUNCH20"
LAUNCH_COUPON = CouponCreate(
    code=COUPON_CODE, name="Launch offer", percent_off="20", duration="repeating", duration_in_periods=3
)
# The tenant's default rate; a rate with a country applies only to customers there.
GERMAN_VAT = TaxRateCreate(
    display_name="VAT", percentage="19", inclusive=False, country="DE", jurisdiction="Germany"
)

TENANT_NAME = "Demo"  # the invoice numbers' prefix comes from the name the tenant is created with
TENANT_SETTINGS = TenantPatch(
    name="Demo Cloud",
    support_email="support@demo-cloud.example.com",
    email_from="billing@demo-cloud.example.com",
    update_payment_method_url="https://demo-cloud.example.com/account/billing",
)


async def create_catalog(session: AsyncSession, tenant_id: str, *, now: datetime) -> list[str]:
    """Meters, plans and the coupon; the ids of the tax rates to make the tenant's default."""
    for meter in METERS:
        await create_meter(session, tenant_id, meter, now=now)
    for plan in PLANS:
        await create_plan(session, tenant_id, plan, now=now)
    await create_coupon(session, tenant_id, LAUNCH_COUPON, now=now)
    return [(await create_tax_rate(session, tenant_id, GERMAN_VAT, now=now)).id]
