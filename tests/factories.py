"""Factories for test data (polyfactory)."""

from __future__ import annotations

from polyfactory import Use
from polyfactory.factories import TypedDictFactory
from typing_extensions import TypedDict

TIMEZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
]


class TenantSettingsPatch(TypedDict):
    """The non-secret tenant settings a PATCH can carry."""

    name: str
    support_email: str
    billing_timezone: str
    grace_period_hours: int
    update_payment_method_url: str
    stripe_livemode: bool


class TenantPatchFactory(TypedDictFactory[TenantSettingsPatch]):
    __randomize_collection_length__ = False
    name = Use(lambda: TenantPatchFactory.__faker__.company()[:200])
    support_email = Use(lambda: f"billing-{TenantPatchFactory.__random__.randint(1, 10**6)}@example.com")
    billing_timezone = Use(lambda: TenantPatchFactory.__random__.choice(TIMEZONES))
    grace_period_hours = Use(lambda: TenantPatchFactory.__random__.randint(0, 744))
    update_payment_method_url = Use(
        lambda: f"https://example.com/card/{TenantPatchFactory.__random__.randint(1, 999)}"
    )
    stripe_livemode = Use(lambda: TenantPatchFactory.__random__.choice([True, False]))
