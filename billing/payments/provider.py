"""The provider interface: one method per flow, provider-neutral requests and results.

Amounts are integers in minor units and currencies upper case; adapters translate both ways.
An adapter never raises for an outcome: it sorts every answer and every error into a
:class:`ChargeResult` / :class:`RefundResult`, so callers handle outcomes, not exceptions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    ACTION_REQUIRED = "action_required"
    # The provider is still working on it (e.g. a bank debit): ask again later.
    PROCESSING = "processing"
    # Nothing is known (timeout, connection error, 5xx, rate limit): repeat the same request later.
    UNKNOWN = "unknown"
    # ``retrieve`` found no such payment: the charge never reached the provider.
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class ChargeRequest:
    payment_id: str
    tenant_id: str
    invoice_id: str
    amount: int
    currency: str
    customer: str | None
    payment_method: str | None
    idempotency_key: str
    description: str = ""


@dataclass(frozen=True)
class ChargeResult:
    outcome: Outcome
    provider_payment_id: str | None = None
    failure_code: str | None = None
    decline_code: str | None = None
    # "hard" (do not retry this payment method) or "soft"; None unless declined.
    decline_type: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RefundRequest:
    refund_id: str
    provider_payment_id: str
    amount: int
    currency: str
    idempotency_key: str


@dataclass(frozen=True)
class RefundResult:
    outcome: Outcome
    provider_refund_id: str | None = None
    failure_code: str | None = None
    message: str | None = None


class PaymentProvider(Protocol):
    name: str

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge off-session; the same idempotency key never charges twice."""
        ...

    async def retrieve(self, request: ChargeRequest, provider_payment_id: str | None) -> ChargeResult:
        """The outcome of an earlier ``charge``, found by its id or else by our payment id."""
        ...

    async def refund(self, request: RefundRequest) -> RefundResult: ...

    async def aclose(self) -> None: ...
