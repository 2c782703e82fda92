"""Stripe-Signature verification on the raw body bytes, before anything is parsed.

Header: ``t=<unix seconds>,v1=<hex>[,v1=<hex>...]``, HMAC-SHA256 over ``<t>.<raw body>`` keyed with
the endpoint secret. Parsing is as strict as Stripe's own libraries (no trimming of spaces), and
stricter where they are lax: exactly one ``t``, digits only, and the timestamp must lie within
300 s of now in either direction (stripe-python checks only the past, and only when asked).
``v0`` and any other scheme are ignored, so a header carrying only ``v0`` never verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE_SECONDS = 300
MAX_HEADER_LENGTH = 2048
MAX_SIGNATURES = 8
_TIMESTAMP = re.compile(rb"[0-9]{1,12}")
_V1 = re.compile(rb"[0-9a-f]{64}")


@dataclass(frozen=True)
class SignatureHeader:
    timestamp: bytes
    signatures: tuple[bytes, ...]


def parse_header(header: str | None) -> SignatureHeader | None:
    """The timestamp and the well-formed ``v1`` signatures; None when the header is unusable."""
    if not header or len(header) > MAX_HEADER_LENGTH or not header.isascii():
        return None
    timestamps: list[bytes] = []
    signatures: list[bytes] = []
    for item in header.encode("ascii").split(b","):
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            return None
        if key == b"t":
            timestamps.append(value)
        elif key == b"v1" and _V1.fullmatch(value):
            signatures.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        return None
    if not signatures or len(signatures) > MAX_SIGNATURES:
        return None
    return SignatureHeader(timestamps[0], tuple(signatures))


def sign(payload: bytes, secret: bytes, timestamp: bytes) -> bytes:
    """The lower-case hex ``v1`` signature of ``payload`` at ``timestamp``."""
    return hmac.new(secret, timestamp + b"." + payload, hashlib.sha256).hexdigest().encode("ascii")


def verify(payload: bytes, header: str | None, secrets: Sequence[bytes], *, now: float) -> bool:
    """True when a ``v1`` signature matches one of ``secrets`` and the timestamp is fresh."""
    parsed = parse_header(header)
    if parsed is None or not secrets:
        return False
    matched = False
    for secret in secrets:
        expected = sign(payload, secret, parsed.timestamp)
        for candidate in parsed.signatures:
            # No early exit: every comparison runs, each in constant time.
            matched |= hmac.compare_digest(expected, candidate)
    fresh = abs(now - int(parsed.timestamp)) <= TOLERANCE_SECONDS
    return matched and fresh
