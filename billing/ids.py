"""Opaque ids with a type prefix (``cus_``, ``inv_``, ...), roughly ordered by creation time.

26 Crockford base32 characters after the prefix: 48 bits of milliseconds, 80 random bits,
so that ``ORDER BY id`` pages in creation order and ids never collide across replicas.
"""

from __future__ import annotations

import secrets

from billing.clock import wall_time_ns

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
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
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(f"{prefix}_")
