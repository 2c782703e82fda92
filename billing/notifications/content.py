"""What an email says: the template context, built from the tenant, customer, invoice and event data.

Values are formatted here (amounts for the currency and the customer's locale, dates in the
customer's timezone), so that templates only place them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_interval
from babel.numbers import format_decimal

from billing.core import money
from billing.core.clock import parse_timestamp
from billing.notifications import render
from billing.tenants.models import Tenant

DEFAULT_LOCALE = "en"
# Said to the customer instead of the raw code. Lost, stolen and fraud declines read as a plain
# decline, as card networks ask: the customer is not told what the issuer suspects.
DECLINE_REASONS = {
    "insufficient_funds": "the card has insufficient funds",
    "expired_card": "the card has expired",
    "incorrect_cvc": "the card's security code was incorrect",
    "invalid_cvc": "the card's security code was incorrect",
    "incorrect_number": "the card number was incorrect",
    "invalid_number": "the card number was incorrect",
    "card_velocity_exceeded": "the card has reached its spending limit",
    "withdrawal_count_limit_exceeded": "the card has reached its spending limit",
    "processing_error": "the bank could not process it",
    "issuer_not_available": "the bank could not be reached",
    "try_again_later": "the bank could not process it",
    "payment_method_missing": "there is no payment method on file",
    "resource_missing": "the payment method on file is no longer available",
    "authentication_required": "your bank asks you to confirm it",
}
CARD_BRANDS = {
    "amex": "American Express",
    "american express": "American Express",
    "diners": "Diners Club",
    "discover": "Discover",
    "jcb": "JCB",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
}
FINAL_ACTIONS = {
    "mark_uncollectible": "we will stop retrying and the invoice will be marked as uncollectible",
    "leave_open": "we will stop retrying automatically; the invoice stays open until it is paid",
}


@functools.lru_cache(maxsize=256)
def parse_locale(tag: str | None) -> Locale:
    """A babel locale for a tag such as ``de``, ``pt-BR`` or ``fr_CA``; English when unknown."""
    try:
        return Locale.parse((tag or DEFAULT_LOCALE).replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return Locale.parse(DEFAULT_LOCALE)


@functools.lru_cache(maxsize=256)
def parse_timezone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Formatter:
    """Formats values for one reader: their locale and their timezone."""

    locale: Locale
    tz: ZoneInfo

    @classmethod
    def of(cls, locale: str | None, timezone: str | None) -> Formatter:
        return cls(parse_locale(locale), parse_timezone(timezone))

    def money(self, amount: int, currency: str) -> str:
        return _money(amount, currency, self.locale)

    def date(self, at: datetime | str | None) -> str | None:
        """A day in the reader's timezone; ``at`` may also be RFC 3339 text (from an event payload)."""
        if at is None:
            return None
        instant = parse_timestamp(at) if isinstance(at, str) else at
        return _date(self._local(instant), "long", self.locale)

    def period(self, start: datetime, end: datetime) -> str:
        """An invoice period, whose end is exclusive: Oct 1 to Nov 1 reads "Oct 1 - 31, 2026"."""
        last_day = self._local(max(start, end - timedelta(microseconds=1)))
        return _interval(self._local(start), last_day, self.locale)

    def number(self, value: Decimal) -> str:
        """A quantity with the locale's separators, every digit kept."""
        return format_decimal(value, locale=self.locale, decimal_quantization=False)

    def month(self, year: int, month: int) -> str:
        return _date(date(year, month, 1), "MMMM y", self.locale)

    def _local(self, at: datetime) -> dt.date:
        return at.astimezone(self.tz).date()


# Formatting with babel takes tens of microseconds a value, and a batch of emails repeats the
# same few days, periods and amounts: each is formatted once per locale.
@functools.lru_cache(maxsize=4096)
def _money(amount: int, currency: str, locale: Locale) -> str:
    return money.format_money(amount, currency, str(locale))


@functools.lru_cache(maxsize=4096)
def _date(day: date, pattern: str, locale: Locale) -> str:
    return format_date(day, pattern, locale=locale)


@functools.lru_cache(maxsize=4096)
def _interval(first: date, last: date, locale: Locale) -> str:
    return format_interval(first, last, "yMMMd", locale=locale)


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "support_email": tenant.support_email,
        "update_url": web_link(tenant.update_payment_method_url),
    }


def web_link(url: str | None) -> str | None:
    """``url`` if it is an http(s) link, else None: an email never links to ``javascript:`` & co."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


class CustomerFacts(Protocol):
    """What an email needs of a customer (an ORM object or a row of these columns), read only."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def timezone(self) -> str | None: ...


class InvoiceFacts(Protocol):
    id: str
    number: str | None
    currency: str
    total: int
    amount_due: int
    amount_paid: int
    period_start: datetime
    period_end: datetime
    due_at: datetime | None


def customer_view(customer: CustomerFacts) -> dict[str, Any]:
    return {"name": customer.name or None, "email": customer.email}


def invoice_view(invoice: InvoiceFacts, fmt: Formatter) -> dict[str, Any]:
    currency = invoice.currency
    return {
        "id": invoice.id,
        "number": invoice.number or invoice.id,
        "currency": currency,
        "total": fmt.money(invoice.total, currency),
        "amount_due": fmt.money(invoice.amount_due, currency),
        # A recovered invoice may be read before its paid amount is recorded: the total was paid.
        "amount_paid": fmt.money(invoice.amount_paid or invoice.total, currency),
        "period": fmt.period(invoice.period_start, invoice.period_end),
        "due_date": fmt.date(invoice.due_at),
    }


def dunning_view(data: Mapping[str, Any], fmt: Formatter) -> dict[str, Any]:
    decline_code = data.get("decline_code")
    return {
        "attempt": data.get("attempt"),
        "next_attempt_date": fmt.date(data.get("next_attempt_at")),
        "failure_class": data.get("failure_class") or "soft",
        "reason": DECLINE_REASONS.get(decline_code or "", "the payment was declined"),
        "final_action": FINAL_ACTIONS.get(data.get("final_action") or "", FINAL_ACTIONS["leave_open"]),
        "final_attempt_date": fmt.date(data.get("final_attempt_at")),
    }


def card_view(card: Mapping[str, Any], fmt: Formatter) -> dict[str, Any]:
    brand = str(card.get("brand") or "").strip()
    month, year = card.get("exp_month"), card.get("exp_year")
    expiry: str | None = None
    expiry_month: str | None = None
    if isinstance(month, int) and isinstance(year, int) and 1 <= month <= 12 and year > 0:
        expiry, expiry_month = f"{month:02d}/{year}", fmt.month(year, month)
    return {
        "id": card.get("id"),
        "brand": CARD_BRANDS.get(brand.lower(), brand.title() or "Card"),
        "last4": str(card.get("last4") or "????"),
        "expiry": expiry,
        "expiry_month": expiry_month,
    }


def subscription_view(data: Mapping[str, Any], fmt: Formatter) -> dict[str, Any]:
    """The subscription of ``data["subscription"]`` (as the API shows it), under its plan's name."""
    snapshot: Mapping[str, Any] = data["subscription"]
    return {
        "id": snapshot.get("id"),
        "plan": data.get("plan_name") or snapshot.get("plan_code") or snapshot.get("plan"),
        "quantity": snapshot.get("quantity"),
        "trial_end_date": fmt.date(snapshot.get("trial_end")),
    }


REASONS = {
    "duplicate": "a duplicate charge",
    "fraudulent": "a fraudulent charge",
    "order_change": "a change to your order",
    "product_unsatisfactory": "a product or service that did not meet expectations",
    "other": "an adjustment",
}
SETTLEMENTS = {
    "none": "It reduces what you owe on this invoice.",
    "provider": "The amount is refunded to your original payment method.",
    "credit_balance": "The amount is added to your credit balance and applies to your next invoices.",
}


def credit_note_view(data: Mapping[str, Any], fmt: Formatter) -> dict[str, Any]:
    """The credit note of ``data["credit_note"]`` (as the API shows it) and, for refund_issued,
    the refund of ``data["refund"]``."""
    note: Mapping[str, Any] = data["credit_note"]
    currency = str(note.get("currency") or "")
    refund = data.get("refund")
    refunded = refund.get("amount") if isinstance(refund, Mapping) else None
    return {
        "id": note.get("id"),
        "number": note.get("number"),
        "total": fmt.money(int(note.get("total") or 0), currency),
        "reason": REASONS.get(str(note.get("reason")), REASONS["other"]),
        "settlement": SETTLEMENTS.get(str(note.get("refund")), SETTLEMENTS["none"]),
        "memo": note.get("memo"),
        "refund_amount": fmt.money(int(refunded), currency) if isinstance(refunded, int) else None,
    }


def alert_view(data: Mapping[str, Any], fmt: Formatter) -> dict[str, Any]:
    """The crossing of ``data["trigger"]`` of the alert ``data["alert"]`` (as the API shows them):
    what was measured, the threshold and the value, formatted for the reader."""
    alert: Mapping[str, Any] = data["alert"]
    trigger: Mapping[str, Any] = data["trigger"]
    meter = data.get("meter_name") or alert.get("meter")
    if alert.get("type") == "spend_amount":
        currency = str(alert.get("currency") or "")
        what = f"Your spend on {meter}" if meter else "Your spend on usage"

        def show(value: Any) -> str:
            return fmt.money(int(value), currency)
    else:
        what = f"Your usage of {meter}"

        def show(value: Any) -> str:
            return fmt.number(Decimal(str(value)))

    start, end = _instant(trigger["period_start"]), _instant(trigger["period_end"])
    return {
        "id": alert.get("id"),
        "name": alert.get("name") or "Usage alert",
        "what": what,
        "threshold": show(trigger["threshold"]),
        "value": show(trigger["value"]),
        "period": fmt.period(start, end),
    }


def _instant(value: datetime | str) -> datetime:
    return parse_timestamp(value) if isinstance(value, str) else value


def written_in(kind: str, locale: str | None) -> tuple[str, str | None]:
    """The language an email of ``kind`` is written in for a reader of ``locale`` (``de_AT`` reads
    ``de``), and the locale its amounts and dates are formatted in.

    A kind written in several languages is wholly English (text, amounts, dates) for a reader of
    any other language, so that nothing is mixed; a kind written in English only keeps formatting
    for the reader's locale, as it always has.
    """
    language, kind_languages = parse_locale(locale).language, render.languages(kind)
    if language in kind_languages:
        return language, locale
    return render.DEFAULT_LANGUAGE, DEFAULT_LOCALE if len(kind_languages) > 1 else locale


def customer_context(
    kind: str,
    tenant: Tenant,
    customer: CustomerFacts,
    invoice: InvoiceFacts | None,
    data: Mapping[str, Any],
) -> dict[str, Any]:
    """The context of a customer email of ``kind``."""
    language, locale = written_in(kind, customer.locale)
    fmt = Formatter.of(locale, customer.timezone or tenant.billing_timezone)
    context: dict[str, Any] = {
        "kind": kind,
        "language": language,
        "tenant": tenant_view(tenant),
        "customer": customer_view(customer),
        "invoice": invoice_view(invoice, fmt) if invoice is not None else None,
        "dunning": dunning_view(data, fmt),
        "card": card_view(data["card"], fmt) if "card" in data else None,
        "subscription": subscription_view(data, fmt) if "subscription" in data else None,
        "credit_note": credit_note_view(data, fmt) if "credit_note" in data else None,
        "alert": alert_view(data, fmt) if "alert" in data and "trigger" in data else None,
    }
    return context


def tenant_context(kind: str, tenant: Tenant, data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The context of an email to the tenant itself (``webhook_endpoint_disabled``)."""
    fmt = Formatter.of(DEFAULT_LOCALE, tenant.billing_timezone)
    return {
        "kind": kind,
        "tenant": tenant_view(tenant),
        "endpoint": {"id": data.get("endpoint_id"), "url": data.get("url")},
        "disabled_date": fmt.date(data.get("disabled_at") or at),
    }
