"""Which failures are worth retrying: the table from provider codes to our classes.

Codes are Stripe's (``error.code`` and ``error.decline_code``), which the sandbox mimics and which
most processors map onto. A *hard* decline will fail again on the same payment method (lost,
stolen, closed, expired, wrong details): dunning asks the customer for another one instead of
retrying. A *soft* decline may pass later (funds, issuer busy, generic): dunning retries on its
schedule. Codes not in the table are soft, as Stripe advises for unknown declines.
"""

from __future__ import annotations

import enum

from billing.payments.provider import ChargeResult, Outcome


class FailureClass(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"
    ACTION_REQUIRED = "action_required"


ACTION_REQUIRED_CODES = frozenset({"authentication_required", "payment_intent_authentication_failure"})

HARD_DECLINE_CODES = frozenset(
    {
        "card_not_supported",
        "currency_not_supported",
        "do_not_try_again",
        "expired_card",
        "fraudulent",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_zip",
        "invalid_account",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "not_permitted",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "stolen_card",
        "stop_payment_order",
        "transaction_not_allowed",
        # Ours and Stripe's for a charge that cannot even be attempted.
        "payment_method_missing",
        "resource_missing",
        "payment_method_unactivated",
        "payment_method_not_available",
    }
)

SOFT_DECLINE_CODES = frozenset(
    {
        "approve_with_id",
        "call_issuer",
        "card_velocity_exceeded",
        "do_not_honor",
        "duplicate_transaction",
        "generic_decline",
        "insufficient_funds",
        "invalid_amount",
        "issuer_not_available",
        "no_action_taken",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "pin_try_exceeded",
        "processing_error",
        "reenter_transaction",
        "service_not_allowed",
        "testmode_decline",
        "try_again_later",
        "withdrawal_count_limit_exceeded",
    }
)


def classify(failure_code: str | None, decline_code: str | None) -> FailureClass:
    """The class of a failed charge; the decline code, when there is one, is the more precise."""
    codes = [code for code in (decline_code, failure_code) if code]
    if any(code in ACTION_REQUIRED_CODES for code in codes):
        return FailureClass.ACTION_REQUIRED
    for code in codes:
        if code in HARD_DECLINE_CODES:
            return FailureClass.HARD
        if code in SOFT_DECLINE_CODES:
            return FailureClass.SOFT
    return FailureClass.SOFT


def failed_charge(
    provider_payment_id: str | None, code: str | None, decline_code: str | None, message: str | None
) -> ChargeResult:
    """The result of a charge the provider refused, sorted into a decline or an action required."""
    kind = classify(code, decline_code)
    if kind is FailureClass.ACTION_REQUIRED:
        return ChargeResult(Outcome.ACTION_REQUIRED, provider_payment_id, code, decline_code, None, message)
    return ChargeResult(Outcome.DECLINED, provider_payment_id, code, decline_code, kind.value, message)
