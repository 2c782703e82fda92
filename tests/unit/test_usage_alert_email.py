"""The usage_alert email: what was measured, the threshold and the value, for the reader's locale."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from billing.notifications import content
from billing.notifications.render import render
from billing.tenants.models import Tenant

TENANT = Tenant(
    id="ten_1",
    name="Acme",
    currency="EUR",
    invoice_prefix="ACME",
    support_email="help@acme.example",
    update_payment_method_url=None,
    billing_timezone="UTC",
    email_from=None,
)
TRIGGER = {"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z"}


def rendered(
    alert: dict[str, Any], trigger: dict[str, Any], locale: str, meter_name: str | None = None
) -> Any:
    reader = SimpleNamespace(id="cus_1", email="jane@example.com", name="Jane", locale=locale, timezone="UTC")
    data = {"alert": alert, "trigger": TRIGGER | trigger, "meter_name": meter_name}
    return render("usage_alert", content.customer_context("usage_alert", TENANT, reader, None, data))


def test_a_spend_alert_reads_in_money_of_the_readers_locale() -> None:
    alert = {"id": "alr_1", "name": "Budget", "type": "spend_amount", "currency": "EUR", "meter": None}
    email = rendered(alert, {"threshold": 100000, "value": 123456}, "de_DE")
    assert email.subject == "Acme: Budget: 1.234,56\xa0€ this period, past 1.000,00\xa0€"
    period = "1.\u201330. Nov. 2026"  # an en dash between the days
    assert f"Your spend on usage in your billing period {period} has reached 1.234,56\xa0€" in email.text


def test_a_usage_alert_names_its_meter_and_keeps_every_digit() -> None:
    alert = {"id": "alr_1", "name": None, "type": "usage_units", "currency": None, "meter": "api_calls"}
    email = rendered(alert, {"threshold": "1000000", "value": "1000000.125"}, "en", meter_name="API calls")
    assert email.subject == "Acme: Usage alert: 1,000,000.125 this period, past 1,000,000"
    assert email.text.startswith("Hello Jane,\n\nYour usage of API calls in your billing period Nov 1")
    assert "&ldquo;Usage alert&rdquo;" in email.html
