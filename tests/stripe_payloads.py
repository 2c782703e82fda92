"""Stripe-shaped payloads (API 2026-10-28) and signatures made with stripe-python itself.

Builders return plain dicts in Stripe's real shapes, including the fields we do not read, so
that the receiver is tested against what Stripe sends, not against what we expect to read.
Bodies are encoded as Stripe does: pretty-printed JSON with two-space indents.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import stripe

API_VERSION = "2026-10-28.clover"
FROZEN_TS = int(datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp())


def stripe_id(prefix: str) -> str:
    return f"{prefix}_1Q{secrets.token_hex(11)}"


def event(
    type: str,
    obj: dict[str, Any],
    *,
    id: str | None = None,
    livemode: bool = False,
    created: int = FROZEN_TS - 2,
    api_version: str | None = API_VERSION,
    request: Any = "default",
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": id or stripe_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None} if request == "default" else request,
        "type": type,
    }


def card_details(
    *, brand: str = "visa", last4: str = "4242", exp_month: int = 12, exp_year: int = 2026
) -> dict[str, Any]:
    return {
        "brand": brand,
        "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
        "country": "US",
        "exp_month": exp_month,
        "exp_year": exp_year,
        "fingerprint": "Xt5EWLLDS7FJjR1c",
        "funding": "credit",
        "last4": last4,
    }


def card(customer: str | None, *, id: str | None = None, **details: Any) -> dict[str, Any]:
    """A legacy Card object, as in ``customer.source.expiring`` / ``customer.source.deleted``."""
    shown = card_details(**details)
    return {
        "id": id or stripe_id("card"),
        "object": "card",
        "address_city": None,
        "address_country": None,
        "address_line1": None,
        "address_line1_check": None,
        "address_line2": None,
        "address_state": None,
        "address_zip": None,
        "address_zip_check": None,
        "brand": shown["brand"].title() if shown["brand"] != "amex" else "American Express",
        "country": "US",
        "customer": customer,
        "cvc_check": "pass",
        "dynamic_last4": None,
        "exp_month": shown["exp_month"],
        "exp_year": shown["exp_year"],
        "fingerprint": shown["fingerprint"],
        "funding": "credit",
        "last4": shown["last4"],
        "metadata": {},
        "name": None,
        "tokenization_method": None,
        "wallet": None,
    }


def source(
    customer: str | None, *, id: str | None = None, type: str = "card", **details: Any
) -> dict[str, Any]:
    """A legacy Source; ``type="card"`` nests the card, other types (e.g. ach) do not."""
    obj: dict[str, Any] = {
        "id": id or stripe_id("src"),
        "object": "source",
        "amount": None,
        "client_secret": "src_client_secret_abc",
        "created": FROZEN_TS - 86_400 * 300,
        "currency": None,
        "customer": customer,
        "flow": "none",
        "livemode": False,
        "metadata": {},
        "owner": {"address": None, "email": None, "name": None, "phone": None},
        "statement_descriptor": None,
        "status": "chargeable",
        "type": type,
        "usage": "reusable",
    }
    if type == "card":
        obj["card"] = {**card_details(**details), "three_d_secure": "optional", "tokenization_method": None}
    else:
        obj[type] = {"bank_name": "STRIPE TEST BANK", "last4": "6789"}
    return obj


def bank_account(customer: str) -> dict[str, Any]:
    return {
        "id": stripe_id("ba"),
        "object": "bank_account",
        "account_holder_name": "Jane Austen",
        "account_holder_type": "individual",
        "bank_name": "STRIPE TEST BANK",
        "country": "US",
        "currency": "usd",
        "customer": customer,
        "fingerprint": "1JWtPxqbdX5Gamtc",
        "last4": "6789",
        "metadata": {},
        "routing_number": "110000000",
        "status": "new",
    }


def payment_method(
    customer: str | None, *, id: str | None = None, type: str = "card", **details: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": id or stripe_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "created": FROZEN_TS - 86_400 * 30,
        "customer": customer,
        "livemode": False,
        "metadata": {},
        "type": type,
    }
    if type == "card":
        obj["card"] = {
            **card_details(**details),
            "display_brand": details.get("brand", "visa"),
            "generated_from": None,
            "networks": {"available": ["visa"], "preferred": None},
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        }
    else:
        obj[type] = {"bank_code": "37040044", "country": "DE", "last4": "3000"}
    return obj


def payment_intent(
    *,
    metadata: dict[str, str],
    customer: str = "cus_Stripe42",
    amount: int = 7300,
    code: str | None = "card_declined",
    decline_code: str | None = "insufficient_funds",
    message: str | None = "Your card has insufficient funds.",
    id: str | None = None,
) -> dict[str, Any]:
    """A PaymentIntent whose confirmation failed (``payment_intent.payment_failed``)."""
    intent_id = id or stripe_id("pi")
    method = payment_method(customer, last4="9995")
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "automatic_payment_methods": None,
        "capture_method": "automatic_async",
        "client_secret": f"{intent_id}_secret_abc",
        "confirmation_method": "automatic",
        "created": FROZEN_TS - 5,
        "currency": "usd",
        "customer": customer,
        "description": None,
        "last_payment_error": {
            "charge": stripe_id("ch"),
            "code": code,
            "decline_code": decline_code,
            "doc_url": f"https://docs.stripe.com/error-codes/{code}",
            "message": message,
            "payment_method": method,
            "type": "card_error",
        },
        "latest_charge": stripe_id("ch"),
        "livemode": False,
        "metadata": metadata,
        "next_action": None,
        "payment_method": None,
        "payment_method_types": ["card"],
        "setup_future_usage": None,
        "status": "requires_payment_method",
    }


def encode(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2)


def signature_header(payload: str, secret: str, timestamp: int = FROZEN_TS) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp))
