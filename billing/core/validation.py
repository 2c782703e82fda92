"""Field checks shared by the domains; each raises ValidationFailed naming the field."""

from __future__ import annotations

import functools
import zoneinfo
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from billing.core import money
from billing.core.errors import ValidationFailed


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone(field: str, value: str) -> str:
    if value not in _timezones():
        raise ValidationFailed.field(field, f"'{value}' is not an IANA time zone name")
    return value


def email(field: str, value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValidationFailed.field(field, str(exc)) from exc


def currency(field: str, value: str) -> str:
    if not money.is_currency(value):
        raise ValidationFailed.field(field, f"'{value}' is not an ISO 4217 currency code (upper case)")
    return value


def web_url(field: str, value: str, *, require_https: bool) -> str:
    parts = urlsplit(value)
    schemes = ("https",) if require_https else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname or len(value) > 2048:
        raise ValidationFailed.field(field, f"expected an absolute {' or '.join(schemes)} URL")
    return value


def text(field: str, value: str, *, max_length: int, min_length: int = 1) -> str:
    stripped = value.strip()
    if not min_length <= len(stripped) <= max_length:
        raise ValidationFailed.field(field, f"must be {min_length} to {max_length} characters")
    return stripped


def int_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValidationFailed.field(field, f"must be between {low} and {high}")
    return value
