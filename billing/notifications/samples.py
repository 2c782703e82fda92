"""Sample data for previews: what each email looks like with the caller's own branding."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.core import money
from billing.customers.models import Customer
from billing.invoicing.models import Invoice
from billing.notifications import content
from billing.notifications.queue import TENANT_KINDS
from billing.tenants.models import Tenant

SAMPLE_AMOUNT = Decimal("123.45")


def sample_context(kind: str, tenant: Tenant, now: datetime, locale: str | None) -> dict[str, Any]:
    if kind in TENANT_KINDS:
        data: dict[str, Any] = {"endpoint_id": "whe_sample", "url": "https://example.com/webhooks/billing"}
        return content.tenant_context(kind, tenant, data, now)
    customer = Customer(
        id="cus_sample",
        name="Jane Doe",
        email="jane.doe@example.com",
        locale=locale or content.DEFAULT_LOCALE,
        timezone=None,
        currency=tenant.currency,
    )
    amount = money.to_minor_units(SAMPLE_AMOUNT, tenant.currency)
    # The month that just ended, in the tenant's timezone, as invoice periods are.
    local_now = now.astimezone(content.parse_timezone(tenant.billing_timezone))
    period_end = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    invoice = Invoice(
        id="inv_sample",
        number=f"{tenant.invoice_prefix}-000042",
        currency=tenant.currency,
        total=amount,
        amount_due=amount,
        amount_paid=amount if kind == "payment_recovered" else 0,
        period_start=(period_end - timedelta(days=1)).replace(day=1),
        period_end=period_end,
        due_at=now,
    )
    data = {
        "invoice_id": invoice.id,
        "attempt": 1,
        "next_attempt_at": now + timedelta(days=3),
        "failure_class": "soft",
        "decline_code": "insufficient_funds",
        "final_action": "mark_uncollectible",
        "final_attempt_at": now + timedelta(days=4),
        "card": {
            "id": "card_sample",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": now.year,
        },
        "subscription": {
            "id": "sub_sample",
            "customer": customer.id,
            "plan": "plan_sample",
            "plan_code": "pro",
            "quantity": 1,
            "status": "trialing",
            "trial_start": now - timedelta(days=11),
            "trial_end": now + timedelta(days=3),
        },
        "plan_name": "Pro",
        "credit_note": {
            "id": "cn_sample",
            "number": f"CN-{tenant.invoice_prefix}-000007",
            "currency": tenant.currency,
            "total": amount,
            "reason": "product_unsatisfactory",
            "refund": "provider" if kind == "refund_issued" else "none",
            "memo": None,
        },
        "refund": {"amount": amount},
        "alert": {
            "id": "alr_sample",
            "name": "Monthly budget",
            "type": "spend_amount",
            "currency": tenant.currency,
            "meter": None,
        },
        "trigger": {
            "threshold": amount,
            "value": amount + amount // 10,
            "period_start": period_end,
            "period_end": (period_end + timedelta(days=32)).replace(day=1),
        },
    }
    return content.customer_context(kind, tenant, customer, invoice, data)
