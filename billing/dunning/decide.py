"""The next step of a dunning case: a pure function of the policy, the case and the time.

Retries happen at the policy's offsets, counted in days from the invoice's first failed charge.
A soft decline is retried at the next offset still ahead. A hard decline, a missing payment
method or an authentication the customer must complete is not retried on the same method: the
case *waits* (its slots pass without a charge) until the customer's payment method changes,
which retries at once (outside the schedule) and then follows the schedule again. When the last
scheduled retry is the next one, the customer gets the final notice; once no slot is left, the
final action is taken.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from billing.payments.declines import FailureClass


class Email(enum.StrEnum):
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_ACTION_REQUIRED = "payment_action_required"
    FINAL_NOTICE = "final_notice"


class Action(enum.StrEnum):
    RETRY = "retry"  # charge at the scheduled slot
    WAIT = "wait"  # let the slot pass without a charge (the payment method must change first)


@dataclass(frozen=True)
class Policy:
    retry_schedule_days: tuple[int, ...] = (3, 5, 7)
    final_action: str = "mark_uncollectible"
    suspend_customer: bool = True
    expiring_card_notice: bool = True


@dataclass(frozen=True)
class Case:
    first_failed_at: datetime
    next_slot: int  # index of the next scheduled retry in the policy's schedule
    final_notice_sent: bool


@dataclass(frozen=True)
class Step:
    email: Email | None
    next_slot: int
    # When to act next and how; None when the case is exhausted.
    next_action_at: datetime | None
    action: Action | None

    @property
    def exhausted(self) -> bool:
        return self.next_action_at is None


def slot_time(policy: Policy, case: Case, slot: int) -> datetime:
    return case.first_failed_at + timedelta(days=policy.retry_schedule_days[slot])


def after_failure(policy: Policy, case: Case, failure: FailureClass, now: datetime) -> Step:
    """The step after a failed charge (the first one, a scheduled retry, or any other attempt)."""
    slot = _first_slot_ahead(policy, case, case.next_slot, now)
    remaining = len(policy.retry_schedule_days) - slot
    action = Action.RETRY if failure is FailureClass.SOFT else Action.WAIT
    if remaining == 1 and not case.final_notice_sent:
        email: Email | None = Email.FINAL_NOTICE
    elif remaining == 0 and case.final_notice_sent:
        email = None  # the last retry failed: the final notice already said what happens now
    elif failure is FailureClass.ACTION_REQUIRED:
        email = Email.PAYMENT_ACTION_REQUIRED
    else:
        email = Email.PAYMENT_FAILED
    if remaining == 0:
        return Step(email, slot, None, None)
    return Step(email, slot, slot_time(policy, case, slot), action)


def at_waiting_slot(policy: Policy, case: Case, now: datetime) -> Step:
    """A slot passes while the case waits for a new payment method: no charge, the next slot."""
    slot = _first_slot_ahead(policy, case, case.next_slot + 1, now)
    remaining = len(policy.retry_schedule_days) - slot
    if remaining == 0:
        return Step(None, slot, None, None)
    email = Email.FINAL_NOTICE if remaining == 1 and not case.final_notice_sent else None
    return Step(email, slot, slot_time(policy, case, slot), Action.WAIT)


def _first_slot_ahead(policy: Policy, case: Case, start: int, now: datetime) -> int:
    """The first slot from ``start`` still in the future; slots missed (an outage, a late outcome) pass."""
    slot = start
    while slot < len(policy.retry_schedule_days) and slot_time(policy, case, slot) <= now:
        slot += 1
    return slot
