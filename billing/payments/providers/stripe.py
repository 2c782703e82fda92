"""The Stripe adapter: PaymentIntents confirmed off-session, through the official SDK.

One ``StripeClient`` per use, built from the tenant's decrypted secret key, async over httpx,
pointed at ``BILLING_STRIPE_API_BASE``, with the API version pinned and the SDK's own network
retries on (they reuse the idempotency key, so they never charge twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import stripe

from billing.payments.declines import failed_charge
from billing.payments.provider import (
    ChargeRequest,
    ChargeResult,
    Outcome,
    RefundRequest,
    RefundResult,
)

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams, RefundCreateParams

API_VERSION = "2026-10-28.endive"
# PaymentIntent status -> our outcome; ``requires_payment_method`` is a decline (see _from_intent).
_INTENT_OUTCOMES = {
    "succeeded": Outcome.SUCCEEDED,
    "processing": Outcome.PROCESSING,
    "requires_capture": Outcome.PROCESSING,
    "requires_action": Outcome.ACTION_REQUIRED,
    "requires_confirmation": Outcome.ACTION_REQUIRED,
}
_REFUND_OUTCOMES = {
    "succeeded": Outcome.SUCCEEDED,
    "pending": Outcome.PROCESSING,
    "requires_action": Outcome.PROCESSING,
}


class StripeProvider:
    name = "stripe"

    def __init__(
        self, api_key: str, *, api_base: str, timeout_seconds: float, max_network_retries: int
    ) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            stripe_version=API_VERSION,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    def __repr__(self) -> str:
        return "StripeProvider(<redacted>)"

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        try:
            intent = await self._client.v1.payment_intents.create_async(
                _intent_params(request),
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as error:
            return _from_error(error)
        return _from_intent(intent)

    async def retrieve(self, request: ChargeRequest, provider_payment_id: str | None) -> ChargeResult:
        try:
            if provider_payment_id:
                return _from_intent(await self._client.v1.payment_intents.retrieve_async(provider_payment_id))
            found = await self._client.v1.payment_intents.search_async(
                {"query": f"metadata['payment_id']:'{request.payment_id}'", "limit": 1}
            )
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return ChargeResult(Outcome.NOT_FOUND, message=_message(error))
            return _from_error(error)
        except stripe.StripeError as error:
            return _from_error(error)
        return _from_intent(found.data[0]) if found.data else ChargeResult(Outcome.NOT_FOUND)

    async def refund(self, request: RefundRequest) -> RefundResult:
        params: RefundCreateParams = {
            "payment_intent": request.provider_payment_id,
            "amount": request.amount,
            "metadata": {"refund_id": request.refund_id},
        }
        try:
            refund = await self._client.v1.refunds.create_async(
                params,
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as error:
            charge = _from_error(error)
            return RefundResult(charge.outcome, failure_code=charge.failure_code, message=charge.message)
        outcome = _REFUND_OUTCOMES.get(refund.status or "", Outcome.DECLINED)
        failure = None if outcome is not Outcome.DECLINED else (refund.failure_reason or refund.status)
        return RefundResult(outcome, refund.id, failure_code=failure)

    async def aclose(self) -> None:
        await self._http.close_async()


def _intent_params(request: ChargeRequest) -> PaymentIntentCreateParams:
    params: PaymentIntentCreateParams = {
        "amount": request.amount,
        "currency": request.currency.lower(),
        "off_session": True,
        "confirm": True,
        "metadata": {
            "invoice_id": request.invoice_id,
            "tenant_id": request.tenant_id,
            "payment_id": request.payment_id,
        },
    }
    if request.customer:
        params["customer"] = request.customer
    if request.payment_method:
        params["payment_method"] = request.payment_method
    if request.description:
        params["description"] = request.description
    return params


def _from_intent(intent: Any) -> ChargeResult:
    outcome = _INTENT_OUTCOMES.get(intent.status)
    if outcome is not None:
        return ChargeResult(outcome, intent.id)
    error = intent.get("last_payment_error") or {}
    return failed_charge(
        intent.id, error.get("code") or intent.status, error.get("decline_code"), error.get("message")
    )


def _from_error(error: stripe.StripeError) -> ChargeResult:
    """Sort an SDK error: card errors and invalid requests are answers; the rest are unknowns."""
    if isinstance(error, stripe.CardError):
        body = error.error
        intent = getattr(body, "payment_intent", None) if body is not None else None
        decline_code = getattr(body, "decline_code", None) if body is not None else None
        return failed_charge(intent.id if intent else None, error.code, decline_code, _message(error))
    if isinstance(error, stripe.InvalidRequestError) and not isinstance(error, stripe.IdempotencyError):
        # A request Stripe refused outright (no such customer or payment method): nothing was charged,
        # and repeating it cannot succeed.
        return failed_charge(None, error.code or "invalid_request", None, _message(error))
    # Timeouts, connection errors, 5xx, rate limits, bad keys, idempotency conflicts: the charge may
    # or may not have happened; reconciliation repeats the same request or looks the intent up.
    return ChargeResult(Outcome.UNKNOWN, message=f"{type(error).__name__}: {_message(error)}")


def _message(error: stripe.StripeError) -> str:
    return (error.user_message or str(error) or type(error).__name__)[:500]
