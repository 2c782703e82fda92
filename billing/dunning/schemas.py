"""Dunning policy and cases on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from billing.dunning.decide import Policy
from billing.dunning.models import DunningCase
from billing.notifications.models import Notification
from billing.payments.schemas import PaymentOut

RetryDays = Annotated[int, msgspec.Meta(ge=1, le=90)]


class PolicyIn(msgspec.Struct, forbid_unknown_fields=True):
    retry_schedule_days: Annotated[list[RetryDays], msgspec.Meta(max_length=10)]
    final_action: Literal["mark_uncollectible", "leave_open"]
    suspend_customer: bool
    expiring_card_notice: bool


class PolicyOut(msgspec.Struct):
    retry_schedule_days: list[int]
    final_action: str
    suspend_customer: bool
    expiring_card_notice: bool
    updated_at: datetime | None
    object: str = "dunning_policy"


class CaseNotificationOut(msgspec.Struct):
    id: str
    kind: str
    status: str
    dedupe_key: str
    created_at: datetime
    sent_at: datetime | None


class CaseOut(msgspec.Struct):
    id: str
    invoice: str
    customer: str
    status: str
    attempts: list[PaymentOut]
    failures: int
    retries: int
    last_failure_class: str | None
    last_failure_code: str | None
    first_failed_at: datetime
    next_action: str | None
    next_action_at: datetime | None
    notifications: list[CaseNotificationOut]
    created_at: datetime
    closed_at: datetime | None
    object: str = "dunning_case"


def policy_out(policy: Policy, updated_at: datetime | None) -> PolicyOut:
    return PolicyOut(
        retry_schedule_days=list(policy.retry_schedule_days),
        final_action=policy.final_action,
        suspend_customer=policy.suspend_customer,
        expiring_card_notice=policy.expiring_card_notice,
        updated_at=updated_at,
    )


def case_notification_out(note: Notification) -> CaseNotificationOut:
    return CaseNotificationOut(
        note.id, note.kind, note.status, note.dedupe_key, note.created_at, note.sent_at
    )


def case_out(
    case: DunningCase, attempts: list[PaymentOut], notifications: list[CaseNotificationOut]
) -> CaseOut:
    return CaseOut(
        id=case.id,
        invoice=case.invoice_id,
        customer=case.customer_id,
        status=case.status,
        attempts=attempts,
        failures=case.failures,
        retries=case.retries,
        last_failure_class=case.last_failure_class,
        last_failure_code=case.last_failure_code,
        first_failed_at=case.first_failed_at,
        next_action=case.next_action,
        next_action_at=case.next_action_at,
        notifications=notifications,
        created_at=case.created_at,
        closed_at=case.closed_at,
    )
