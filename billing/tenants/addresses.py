"""Postal addresses (a tenant's, for the seller on documents; a customer's, for tax): the wire
shape, its checks and the stored form."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from babel import Locale

from billing.core.errors import ValidationFailed

LINE_MAX_LENGTH = 200
POSTAL_CODE_MAX_LENGTH = 32
ADDRESS_FIELDS = ("line1", "line2", "city", "postal_code", "state", "country")
# Two-letter territories babel knows that are not assigned ISO 3166-1 alpha-2 codes: the
# exceptionally reserved ones, unions and groupings, and private-use codes.
_NOT_ISO_3166 = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "IC", "TA", "EU", "EZ", "UN", "QO", "XA", "XB", "XK", "ZZ"}
)


class Address(msgspec.Struct, forbid_unknown_fields=True):
    """Every part is optional; a blank part is no part (``null``)."""

    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    postal_code: str | None = None
    state: str | None = None
    country: str | None = None


@functools.cache
def countries() -> frozenset[str]:
    """The ISO 3166-1 alpha-2 codes, upper case."""
    codes = (code for code in Locale("en").territories if isinstance(code, str))
    return frozenset(code for code in codes if len(code) == 2 and code.isalpha()) - _NOT_ISO_3166


def country(field: str, value: str) -> str:
    if value not in countries():
        raise ValidationFailed.field(
            field, f"'{value}' is not an ISO 3166-1 alpha-2 country code (upper case)"
        )
    return value


def stored_address(field: str, address: Address | None) -> dict[str, Any] | None:
    """The address as stored and shown: every part, ``null`` where absent; None for no address."""
    if address is None:
        return None
    parts: dict[str, Any] = {}
    for name in ADDRESS_FIELDS:
        value = getattr(address, name)
        parts[name] = _part(f"{field}.{name}", name, value)
    return parts


def _part(field: str, name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if name == "country":
        return country(field, value)
    limit = POSTAL_CODE_MAX_LENGTH if name == "postal_code" else LINE_MAX_LENGTH
    text = value.strip()
    if len(text) > limit or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValidationFailed.field(field, f"must be at most {limit} characters, without control characters")
    return text


def address_country(address: dict[str, Any] | None) -> str | None:
    return None if address is None else address.get("country")
