"""Meter verbs; a session is the first argument, no HTTP in here.

A meter is addressed by its ``mtr_`` id or by its key (the id wins if a key looks like an id).
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.db.inserts import insert_row_ignore
from billing.core.db.queries import find_by_id_or_key
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.core.validation import reference
from billing.metering.groups import MAX_GROUP_BY
from billing.metering.models import AGGREGATIONS, Meter
from billing.metering.schemas import MeterCreate, MeterPatch

KEY_PATTERN = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}")
GROUP_BY_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NAME_MAX_LENGTH = 200
UNIT_MAX_LENGTH = 64
UNIQUE_PROPERTY_MAX_LENGTH = 128


async def create_meter(session: AsyncSession, tenant_id: str, data: MeterCreate, *, now: datetime) -> Meter:
    """Create a meter; a second one with the same key is a Conflict, decided by the unique constraint."""
    meter = Meter(
        id=new_id("mtr"),
        tenant_id=tenant_id,
        key=key("key", data.key),
        name=_name(data.name if data.name is not None else data.key),
        aggregation=_aggregation(data.aggregation),
        unique_property=_unique_property(data.aggregation, data.unique_property),
        unit=_unit(data.unit),
        group_by=group_by_keys(data.group_by),
        allow_negative=data.allow_negative,
        created_at=now,
        updated_at=now,
    )
    if not await insert_row_ignore(session, meter):
        raise Conflict(f"A meter with key '{meter.key}' already exists")
    return meter


async def get_meter(session: AsyncSession, tenant_id: str, ref: str) -> Meter:
    """The tenant's meter with this id or key (the id wins); NotFound otherwise."""
    meter = await find_by_id_or_key(session, Meter, tenant_id, Meter.key, ref)
    if meter is None:
        raise NotFound(f"No meter {ref}")
    return meter


async def meters_by_key(session: AsyncSession, tenant_id: str, keys: set[str]) -> dict[str, Meter]:
    """The tenant's meters with these keys, by key; one query. Unknown keys are left out."""
    if not keys:
        return {}
    rows = (
        await session.scalars(sa.select(Meter).where(Meter.tenant_id == tenant_id, Meter.key.in_(keys)))
    ).all()
    return {meter.key: meter for meter in rows}


async def list_meters(session: AsyncSession, tenant_id: str, page: PageRequest) -> tuple[list[Meter], bool]:
    stmt = sa.select(Meter).where(Meter.tenant_id == tenant_id)
    return await fetch_page(session, stmt, Meter.id, page)


async def update_meter(session: AsyncSession, meter: Meter, patch: MeterPatch, *, now: datetime) -> Meter:
    """Rename a meter or change its unit; its key and aggregation are fixed once usage refers to them."""
    name = _name(patch.name) if patch.name is not UNSET else meter.name
    unit = _unit(patch.unit) if patch.unit is not UNSET else meter.unit
    meter.name, meter.unit, meter.updated_at = name, unit, now
    await session.flush()
    return meter


def key(field: str, value: str) -> str:
    if not KEY_PATTERN.fullmatch(value):
        raise ValidationFailed.field(
            field, "must be 1 to 64 characters of a-z, 0-9, '_', '.', '-', not starting with '.' or '-'"
        )
    return value


def group_by_keys(keys: list[str]) -> list[str]:
    """A meter's group_by: up to 3 distinct property keys."""
    if len(keys) > MAX_GROUP_BY:
        raise ValidationFailed.field("group_by", f"at most {MAX_GROUP_BY} keys")
    for n, name in enumerate(keys):
        if not GROUP_BY_KEY.fullmatch(name):
            raise ValidationFailed.field(
                f"group_by[{n}]", "must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
            )
        if name in keys[:n]:
            raise ValidationFailed.field(f"group_by[{n}]", f"'{name}' is listed twice")
    return keys


def _aggregation(value: str) -> str:
    if value not in AGGREGATIONS:
        raise ValidationFailed.field("aggregation", f"must be one of {', '.join(AGGREGATIONS)}")
    return value


def _unique_property(aggregation: str, value: str | None) -> str | None:
    if aggregation != "unique_count":
        if value is not None:
            raise ValidationFailed.field("unique_property", "only a unique_count meter has a unique_property")
        return None
    if value is None:
        raise ValidationFailed.field("unique_property", "a unique_count meter needs the property to count")
    return reference("unique_property", value, max_length=UNIQUE_PROPERTY_MAX_LENGTH)


def _name(value: str) -> str:
    return validation.text("name", value, max_length=NAME_MAX_LENGTH)


def _unit(value: str | None) -> str | None:
    return None if value is None else validation.text("unit", value, max_length=UNIT_MAX_LENGTH)
