"""What credit notes need of the customer's credit balance: a promotional grant for a note
refunded to the balance (``refund: "credit_balance"``). The credits domain implements
:class:`CreditBalance`; the composition root hands it in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import ApiError


@dataclass(frozen=True)
class BalanceCredit:
    """A promotional grant of ``amount`` (priority 0, no expiry) named ``name``, for the note."""

    tenant_id: str
    customer_id: str
    currency: str
    amount: int
    name: str
    credit_note_id: str
    invoice_id: str


class CreditBalance(Protocol):
    async def grant(self, session: AsyncSession, credit: BalanceCredit, *, at: datetime) -> str:
        """Grant ``credit`` in the caller's transaction; return the grant's id (crg_...)."""
        ...


class CreditBalanceUnavailable(ApiError):
    status, code, title = 501, "credit_balance_unavailable", "Not implemented"


class NoCreditBalance:
    """For a service without credit grants: a note refunded to the balance is refused, and
    nothing is written."""

    async def grant(self, session: AsyncSession, credit: BalanceCredit, *, at: datetime) -> str:
        raise CreditBalanceUnavailable(
            "Credit grants are not available: refund to the credit balance is not possible"
        )


NO_CREDIT_BALANCE = NoCreditBalance()
