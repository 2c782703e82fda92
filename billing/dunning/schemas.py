"""Dunning policy and cases on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

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
