"""Meter shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Aggregation = Literal["sum", "count", "max", "unique_count", "latest"]


class MeterCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new meter; ``name`` defaults to the key, ``unique_property`` is for unique_count only."""

    key: str
    aggregation: Aggregation
    name: str | None = None
    unique_property: str | None = None
    unit: str | None = None


class MeterPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only ``name`` and ``unit`` change: the key and the aggregation are what usage was recorded under."""

    name: str | UnsetType = UNSET
    unit: str | UnsetType | None = UNSET


class MeterOut(msgspec.Struct):
    id: str
    key: str
    name: str
    aggregation: str
    unique_property: str | None
    unit: str | None
    created_at: datetime
    object: str = "meter"
