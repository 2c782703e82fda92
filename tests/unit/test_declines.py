"""The table from provider codes to failure classes, and the sandbox's Stripe test cards."""

from __future__ import annotations

import pytest

from billing.payments.declines import FailureClass, classify, failed_charge
from billing.payments.provider import ChargeRequest, Outcome, RefundRequest
from billing.payments.providers.sandbox import SandboxProvider, stripe_like_id


@pytest.mark.parametrize(
    ("code", "decline_code", "expected"),
    [
        ("card_declined", "insufficient_funds", FailureClass.SOFT),
        ("card_declined", "generic_decline", FailureClass.SOFT),
        ("processing_error", None, FailureClass.SOFT),
        ("card_declined", "do_not_honor", FailureClass.SOFT),
        ("card_declined", "lost_card", FailureClass.HARD),
        ("card_declined", "stolen_card", FailureClass.HARD),
        ("card_declined", "invalid_account", FailureClass.HARD),
        ("expired_card", None, FailureClass.HARD),
        ("expired_card", "expired_card", FailureClass.HARD),
        ("incorrect_cvc", None, FailureClass.HARD),
        ("payment_method_missing", None, FailureClass.HARD),
        ("authentication_required", None, FailureClass.ACTION_REQUIRED),
        ("card_declined", "authentication_required", FailureClass.ACTION_REQUIRED),
        # An unknown decline code is soft, as Stripe advises; a known decline code beats the error code.
        ("card_declined", "something_new", FailureClass.SOFT),
        (None, None, FailureClass.SOFT),
        ("card_declined", "fraudulent", FailureClass.HARD),
    ],
)
def test_classify(code: str | None, decline_code: str | None, expected: FailureClass) -> None:
    assert classify(code, decline_code) is expected


def test_failed_charge_separates_actions_from_declines() -> None:
    action = failed_charge("pi_1", "authentication_required", "authentication_required", "3DS")
    assert (action.outcome, action.decline_type) == (Outcome.ACTION_REQUIRED, None)
    declined = failed_charge("pi_1", "card_declined", "lost_card", None)
    assert (declined.outcome, declined.decline_type, declined.provider_payment_id) == (
        Outcome.DECLINED,
        "hard",
        "pi_1",
    )


def _request(method: str | None, key: str = "inv_1:attempt:1") -> ChargeRequest:
    return ChargeRequest(
        payment_id="pay_1",
        tenant_id="ten_1",
        invoice_id="inv_1",
        amount=1000,
        currency="USD",
        customer="cus_1",
        payment_method=method,
        idempotency_key=key,
    )


@pytest.mark.parametrize(
    ("method", "outcome", "code", "decline_code"),
    [
        ("pm_card_visa", Outcome.SUCCEEDED, None, None),
        ("pm_card_mastercard", Outcome.SUCCEEDED, None, None),
        ("pm_card_chargeDeclined", Outcome.DECLINED, "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", Outcome.DECLINED, "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", Outcome.DECLINED, "expired_card", "expired_card"),
        (
            "pm_card_authenticationRequired",
            Outcome.ACTION_REQUIRED,
            "authentication_required",
            "authentication_required",
        ),
        ("pm_unknown", Outcome.DECLINED, "resource_missing", None),
    ],
)
async def test_sandbox_answers_like_stripe_test_cards(
    method: str, outcome: Outcome, code: str | None, decline_code: str | None
) -> None:
    result = await SandboxProvider().charge(_request(method))
    assert (result.outcome, result.failure_code, result.decline_code) == (outcome, code, decline_code)
    assert result.provider_payment_id is not None and result.provider_payment_id.startswith("pi_")


async def test_sandbox_is_deterministic_per_idempotency_key() -> None:
    sandbox = SandboxProvider()
    first, repeat = (
        await sandbox.charge(_request("pm_card_visa")),
        await sandbox.charge(_request("pm_card_visa")),
    )
    other = await sandbox.charge(_request("pm_card_visa", key="inv_1:attempt:2"))
    assert first == repeat and first.provider_payment_id != other.provider_payment_id
    assert await sandbox.retrieve(_request("pm_card_visa"), first.provider_payment_id) == first
    refund = RefundRequest("rfd_1", "pi_1", 500, "USD", "pay_1:refund:rfd_1")
    assert (await sandbox.refund(refund)).provider_refund_id == stripe_like_id("re", refund.idempotency_key)


def test_stripe_like_ids_have_stripes_shape() -> None:
    value = stripe_like_id("pi", "seed")
    assert value == stripe_like_id("pi", "seed") and value.startswith("pi_") and len(value) == 27
    assert value[3:].isalnum()
