"""Opaque ids with a type prefix (``cus_``, ``inv_``, ...), roughly ordered by creation time.

26 Crockford base32 characters after the prefix: 48 bits of milliseconds, 80 random bits,
so that ``ORDER BY id`` pages in creation order and ids never collide across replicas.
"""

from __future__ import annotations

import os
import threading

from billing.core.clock import wall_time_ns

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
PREFIXES = frozenset(
    {
        "cus",
        "mtr",
        "plan",
        "sub",
        "inv",
        "ii",
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
        "il",
        "crg",
        "cbt",
        "cpn",
        "dis",
        "txr",
        "cn",
        "alr",
        "atr",
    }
)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{_time_digits(wall_time_ns() // 1_000_000)}{_random_digits()}"


# 26 digits of 5 bits are 130 bits: the first 10 digits hold the 48 bits of milliseconds (their top
# 2 bits are 0), the last 16 the 80 random bits. Digits are written two at a time (10 bits).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_last_time: tuple[int, str] = (-1, "")


def _time_digits(ms: int) -> str:
    global _last_time
    if _last_time[0] != ms:  # the same for every id of a millisecond
        _last_time = (ms, "".join(_PAIRS[(ms >> shift) & 1023] for shift in (40, 30, 20, 10, 0)))
    return _last_time[1]


def _random_digits() -> str:
    value = int.from_bytes(_random_bytes(10), "big")
    return "".join(_PAIRS[(value >> shift) & 1023] for shift in (70, 60, 50, 40, 30, 20, 10, 0))


# The operating system's randomness, read 4 KiB at a time: a read per id costs a system call.
_POOL_SIZE = 4096
_pool_lock = threading.Lock()
_pool = b""
_offset = 0


def _random_bytes(count: int) -> bytes:
    global _pool, _offset
    with _pool_lock:
        if _offset + count > len(_pool):
            _pool, _offset = os.urandom(_POOL_SIZE), 0
        chunk = _pool[_offset : _offset + count]
        _offset += count
        return chunk


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(f"{prefix}_")
