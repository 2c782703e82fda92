"""Group values and group keys of events on meters with ``group_by``.

An event's group is the tuple of its properties named by the meter's ``group_by``, in that
order: a string as it is, a number or boolean as its JSON text, a missing or null property as
``None``. The stored **group key** is the compact JSON array of those values
(``["gpt-4o","input"]``, ``null`` for None), and ``""`` on meters without ``group_by``: rollups,
distinct values and the cardinality cap are keyed by it, and prices decode it. Objects and
arrays are refused as group values, since their JSON text is not stable (PostgreSQL's jsonb
reorders keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

MAX_GROUP_BY = 3
MAX_VALUE_LENGTH = 128
NO_GROUP = ""
GroupValues = tuple[str | None, ...]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[str | None])
# Group keys by the properties' values as sent, for values that are all strings or null (the
# usual case): every ingested event on a grouped meter needs its key, which costs microseconds
# to build and a fraction of one to look up. Other values are never kept, as True, 1 and 1.0
# are equal dict keys with different group values.
_KEYS_LIMIT = 100_000
_keys: dict[tuple[Any, ...], str] = {}


class InvalidGroupValue(ValueError):
    """A group_by property that cannot be a group value (too long, an object or an array)."""


def group_value(key: str, raw: Any) -> str | None:
    """One property's group value."""
    if raw is None:
        return None
    if isinstance(raw, str):
        value = raw
    elif isinstance(raw, bool | int | float):
        value = _encoder.encode(raw).decode()
    else:
        raise InvalidGroupValue(f"properties.{key} groups usage, so it must be a string, number or boolean")
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidGroupValue(
            f"properties.{key} groups usage and is longer than {MAX_VALUE_LENGTH} characters"
        )
    return value


def group_values(properties: Mapping[str, Any] | None, group_by: Sequence[str]) -> GroupValues:
    """The event's group: its values of the ``group_by`` properties, in order."""
    found = properties or {}
    return tuple(group_value(key, found.get(key)) for key in group_by)


def encode(values: GroupValues) -> str:
    """The group key of these values; ``""`` for no values (a meter without group_by)."""
    return _encoder.encode(values).decode() if values else NO_GROUP


def decode(group_key: str) -> GroupValues:
    """The values of a group key (``()`` for ``""``)."""
    return tuple(_decoder.decode(group_key)) if group_key else ()


def group_key(properties: Mapping[str, Any] | None, group_by: Sequence[str]) -> str:
    """The group key of an event with these properties on a meter with this ``group_by``."""
    if not group_by:
        return NO_GROUP
    raw = tuple(map((properties or {}).get, group_by))
    try:
        return _keys[raw]
    except (KeyError, TypeError):  # not kept yet, or an unhashable (refused) value
        pass
    key = encode(tuple(group_value(name, value) for name, value in zip(group_by, raw, strict=True)))
    if all(value is None or type(value) is str for value in raw):
        if len(_keys) >= _KEYS_LIMIT:
            _keys.clear()
        _keys[raw] = key
    return key
