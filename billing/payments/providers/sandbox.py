"""The embedded sandbox provider: Stripe's test payment methods, deterministic, nothing stored.

The outcome depends only on the payment method and ids are derived from the idempotency key, so
repeating a request (same key) answers exactly what it answered the first time, like Stripe.
"""

from __future__ import annotations

import hashlib
import string

from billing.payments.declines import failed_charge
from billing.payments.provider import (
    ChargeRequest,
    ChargeResult,
    Outcome,
    RefundRequest,
    RefundResult,
)

SUCCEEDING = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit"})
# payment method -> (error code, decline code, message)
DECLINING: dict[str, tuple[str, str, str]] = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedLostCard": ("card_declined", "lost_card", "Your card was declined."),
    "pm_card_chargeDeclinedStolenCard": ("card_declined", "stolen_card", "Your card was declined."),
    "pm_card_chargeDeclinedFraudulent": ("card_declined", "fraudulent", "Your card was declined."),
    "pm_card_chargeDeclinedIncorrectCvc": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    "pm_card_authenticationRequired": (
        "authentication_required",
        "authentication_required",
        "This payment requires the customer to authenticate.",
    ),
    "pm_card_chargeDeclinedProcessingError": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
}
_ALPHABET = string.digits + string.ascii_letters


def stripe_like_id(prefix: str, seed: str) -> str:
    """``pi_`` + 24 characters, derived from ``seed``: the same seed always gives the same id."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    chars = []
    for _ in range(24):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return f"{prefix}_{''.join(chars)}"


class SandboxProvider:
    name = "sandbox"

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        intent_id = stripe_like_id("pi", request.idempotency_key)
        method = request.payment_method or ""
        if method in SUCCEEDING:
            return ChargeResult(Outcome.SUCCEEDED, intent_id)
        code, decline, message = DECLINING.get(
            method, ("resource_missing", "", f"No such PaymentMethod: '{method[:64]}'")
        )
        return failed_charge(intent_id, code, decline or None, message)

    async def retrieve(self, request: ChargeRequest, provider_payment_id: str | None) -> ChargeResult:
        return await self.charge(request)

    async def refund(self, request: RefundRequest) -> RefundResult:
        return RefundResult(Outcome.SUCCEEDED, stripe_like_id("re", request.idempotency_key))

    async def aclose(self) -> None:
        return None
