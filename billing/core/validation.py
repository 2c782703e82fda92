"""Field checks shared by the domains; each raises ValidationFailed naming the field."""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from urllib.parse import urlsplit

from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email

from billing.core import money
from billing.core.errors import ValidationFailed

METADATA_MAX_KEYS = 50
METADATA_KEY_MAX_LENGTH = 40
METADATA_VALUE_MAX_LENGTH = 500
_LOCALE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


def reference(field: str, value: str, *, max_length: int) -> str:
    """An identifier chosen by the tenant, kept exactly as sent: no surrounding blanks, no controls."""
    if not 1 <= len(value) <= max_length:
        raise ValidationFailed.field(field, f"must be 1 to {max_length} characters")
    if value != value.strip() or _CONTROL.search(value):
        raise ValidationFailed.field(field, "must not start or end with blanks or contain control characters")
    return value


def locale(field: str, value: str) -> str:
    """A locale babel knows (``de``, ``de-DE``, ``de_DE``), stored as babel's identifier (``de_DE``)."""
    if len(value) <= 16 and _LOCALE_TAG.fullmatch(value):
        try:
            return str(Locale.parse(value.replace("-", "_")))
        except (UnknownLocaleError, ValueError):
            pass
    raise ValidationFailed.field(field, f"'{value}' is not a known locale (e.g. 'en', 'de-DE')")


def validate_metadata(field: str, value: Mapping[str, str]) -> dict[str, str]:
    """Every ``metadata`` (as Stripe): string to string, at most 50 keys of 1..40 characters,
    values of at most 500; the whole object is replaced on PATCH, so it is checked whole."""
    if len(value) > METADATA_MAX_KEYS:
        raise ValidationFailed.field(field, f"at most {METADATA_MAX_KEYS} keys")
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= METADATA_KEY_MAX_LENGTH:
            raise ValidationFailed.field(field, f"keys must be 1 to {METADATA_KEY_MAX_LENGTH} characters")
        if not isinstance(item, str):
            raise ValidationFailed.field(f"{field}.{key}", "values must be strings")
        if len(item) > METADATA_VALUE_MAX_LENGTH:
            raise ValidationFailed.field(
                f"{field}.{key}", f"values must be at most {METADATA_VALUE_MAX_LENGTH} characters"
            )
    return dict(value)
