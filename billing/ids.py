"""Opaque ids with a type prefix (``cus_``, ``inv_``, ...), roughly ordered by creation time.

26 Crockford base32 characters after the prefix: 48 bits of milliseconds, 80 random bits,
so that ``ORDER BY id`` pages in creation order and ids never collide across replicas.
"""

from __future__ import annotations

import base64
import secrets

from billing.clock import wall_time_ns

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_FROM_RFC4648 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
PREFIXES = frozenset(
    {
        "cus",
        "mtr",
        "plan",
        "sub",
        "inv",
        "pay",
        "dun",
        "ntf",
        "whe",
        "whd",
        "key",
        "fses",
        "ten",
        "evt",
        "obx",
        "ste",
        "rfd",
    }
)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    value = (wall_time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    # 26 digits are 130 bits: shifted by 6, the value's bits lead 17 bytes, and base32 takes
    # them 5 at a time from the left, so its first 26 letters are the digits, most significant first.
    digits = base64.b32encode((value << 6).to_bytes(17, "big"))[:26]
    return f"{prefix}_{digits.translate(_FROM_RFC4648).decode()}"


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(f"{prefix}_")
