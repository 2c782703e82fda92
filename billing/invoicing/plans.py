"""Plan verbs; a session is the first argument, no HTTP in here.

A plan is addressed by its ``plan_`` id or its code. Prices are validated whole (every problem
reported at once) and stored with exact decimal strings and the ids of their meters. A price's
floor above its cap is a 422 of its own (``minimum_exceeds_maximum``), asked only of prices
that are otherwise valid.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money, validation
from billing.core.db.inserts import insert_row_ignore
from billing.core.db.queries import find_by_id_or_key
from billing.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.invoicing import percentage, price_checks, pricing
from billing.invoicing.models import Plan, Subscription
from billing.invoicing.schemas import PlanCreate, PlanPatch, PriceIn
from billing.metering.meters import meters_by_key
from billing.tenants.service import get_tenant

CODE_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_PRICES = 50
MAX_TIERS = 50
MAX_FEE = 10**15


async def create_plan(session: AsyncSession, tenant_id: str, data: PlanCreate, *, now: datetime) -> Plan:
    if not CODE_PATTERN.fullmatch(data.code):
        raise ValidationFailed.field("code", "must be 1-64 letters, digits, '_', '.' or '-'")
    currency = (
        validation.currency("currency", data.currency)
        if data.currency is not None
        else (await get_tenant(session, tenant_id)).currency
    )
    plan = Plan(
        id=new_id("plan"),
        tenant_id=tenant_id,
        code=data.code,
        name=validation.text("name", data.name if data.name is not None else data.code, max_length=200),
        currency=currency,
        interval=data.interval,
        base_fee=_base_fee(data.base_fee),
        trial_days=validation.int_range("trial_days", data.trial_days, 0, MAX_TRIAL_DAYS),
        minimum_amount=_minimum(data.minimum_amount),
        threshold_amount=_threshold(data.threshold_amount),
        prices=await _prices(session, tenant_id, data.prices),
        created_at=now,
        updated_at=now,
    )
    if not await insert_row_ignore(session, plan):
        raise Conflict(f"A plan with code '{plan.code}' already exists")
    return plan


async def get_plan(session: AsyncSession, tenant_id: str, ref: str) -> Plan:
    plan = await find_by_id_or_key(session, Plan, tenant_id, Plan.code, ref)
    if plan is None:
        raise NotFound(f"No plan {ref}")
    return plan


async def list_plans(session: AsyncSession, tenant_id: str, page: PageRequest) -> tuple[list[Plan], bool]:
    return await fetch_page(session, sa.select(Plan).where(Plan.tenant_id == tenant_id), Plan.id, page)


async def update_plan(session: AsyncSession, plan: Plan, patch: PlanPatch, *, now: datetime) -> Plan:
    """Change a plan no subscription uses yet; a used plan is immutable (Conflict)."""
    used = await session.scalar(sa.select(sa.exists().where(Subscription.plan_id == plan.id)))
    if used:
        raise Conflict(
            f"Plan '{plan.code}' is used by a subscription and cannot change; create a plan with a new code",
            code="plan_in_use",
        )
    if patch.name is not UNSET:
        plan.name = validation.text("name", patch.name, max_length=200)
    if patch.base_fee is not UNSET:
        plan.base_fee = _base_fee(patch.base_fee)
    if patch.minimum_amount is not UNSET:
        plan.minimum_amount = _minimum(patch.minimum_amount)
    if patch.threshold_amount is not UNSET:
        plan.threshold_amount = _threshold(patch.threshold_amount)
    if patch.prices is not UNSET:
        plan.prices = await _prices(session, plan.tenant_id, patch.prices)
    plan.updated_at = now
    await session.flush()
    return plan


Rate = pricing.Price | percentage.PercentagePrice


def prices_of(plan: Plan) -> list[tuple[dict[str, Any], Rate]]:
    """Each stored price of the plan with its pricing view, parsed once per plan version."""
    key = (plan.id, plan.updated_at)
    parsed = _parsed_prices.get(key)
    if parsed is None:
        if len(_parsed_prices) > 10_000:
            _parsed_prices.clear()
        parsed = _parsed_prices[key] = [(stored, price_of(stored)) for stored in plan.prices]
    return parsed


_parsed_prices: dict[tuple[str, datetime], list[tuple[dict[str, Any], Rate]]] = {}


def price_of(stored: dict[str, Any]) -> Rate:
    """The pure pricing view of a stored price."""
    if stored["model"] == "percentage":
        return percentage.PercentagePrice(
            rate=Decimal(stored["rate"]),
            fixed_amount_per_event=stored.get("fixed_amount_per_event") or 0,
            free_units=stored.get("free_units"),
            minimum_per_event=stored.get("minimum_per_event"),
            maximum_per_event=stored.get("maximum_per_event"),
        )
    return pricing.Price(
        model=stored["model"],
        unit_amount=_decimal_or_none(stored.get("unit_amount")),
        tiers=tuple(
            pricing.Tier(_decimal_or_none(t["up_to"]), Decimal(t["unit_amount"]), t["flat_amount"])
            for t in stored.get("tiers") or ()
        ),
        package_size=_decimal_or_none(stored.get("package_size")),
        package_amount=stored.get("package_amount"),
    )


MAX_TRIAL_DAYS = 730


def _base_fee(value: int) -> int:
    return validation.int_range("base_fee", value, 0, MAX_FEE)


def _minimum(value: int | None) -> int | None:
    return None if value is None else validation.int_range("minimum_amount", value, 0, MAX_FEE)


def _threshold(value: int | None) -> int | None:
    return None if value is None else validation.int_range("threshold_amount", value, 1, MAX_FEE)


def _decimal_or_none(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


async def _prices(session: AsyncSession, tenant_id: str, prices: list[PriceIn]) -> list[dict[str, Any]]:
    """Validated prices as stored; every problem of every price in one 422. Then, of prices
    otherwise valid, the 422s of their own codes: a floor above its cap, a percentage on a meter
    that does not sum, prices some events would match two of."""
    if len(prices) > MAX_PRICES:
        raise ValidationFailed.field("prices", f"at most {MAX_PRICES} prices")
    meters = await meters_by_key(session, tenant_id, {p.meter for p in prices})
    errors: list[FieldError] = []
    stored = []
    unfiltered: set[str] = set()
    for index, price in enumerate(prices):
        field = f"prices[{index}]"
        meter = meters.get(price.meter)
        problems: list[tuple[str, str]] = []
        if meter is None:
            problems.append(("meter", f"no meter with key '{price.meter}'"))
        else:
            problems += price_checks.dimension_problems(price, price_checks.group_by_of(meter))
            if not price.filters and meter.id in unfiltered:
                problems.append(("meter", f"meter '{price.meter}' already has a price without filters"))
            elif not price.filters:
                unfiltered.add(meter.id)
        parsed, parse_problems = _parse_price(price)
        problems += parse_problems + _bound_problems(price)
        errors.extend(FieldError(f"{field}.{name}", message) for name, message in problems)
        if meter is not None and parsed is not None:
            stored.append({"meter_id": meter.id, "meter": meter.key, **_stored(parsed), **_bounds(price)})
            stored[-1].update(price_checks.stored_dimensions(price))
    if errors:
        raise ValidationFailed(f"{len(errors)} problem(s) with the prices", errors=errors)
    _check_bounds_ordered(prices)
    price_checks.check_models(prices, [meters[p.meter].aggregation for p in prices])
    price_checks.check_unambiguous(stored)
    return stored


def _bound_problems(price: PriceIn) -> list[tuple[str, str]]:
    return [
        (name, f"must be between 0 and {MAX_FEE}")
        for name, value in (
            ("minimum_amount", price.minimum_amount),
            ("maximum_amount", price.maximum_amount),
        )
        if value is not None and not 0 <= value <= MAX_FEE
    ]


def _bounds(price: PriceIn) -> dict[str, int]:
    """The floor and cap as stored: only those that are set."""
    bounds = {"minimum_amount": price.minimum_amount, "maximum_amount": price.maximum_amount}
    return {name: value for name, value in bounds.items() if value is not None}


def _check_bounds_ordered(prices: list[PriceIn]) -> None:
    errors = [
        FieldError(f"prices[{index}].{low}", f"must not exceed {high}")
        for index, price in enumerate(prices)
        for low, high in (("minimum_amount", "maximum_amount"), ("minimum_per_event", "maximum_per_event"))
        if getattr(price, low) is not None
        and getattr(price, high) is not None
        and getattr(price, low) > getattr(price, high)
    ]
    if errors:
        raise ValidationFailed(
            "A price's minimum_amount exceeds its maximum_amount",
            code="minimum_exceeds_maximum",
            errors=errors,
        )


def _parse_price(price: PriceIn) -> tuple[Rate | None, list[tuple[str, str]]]:
    if price.model == "percentage":
        return price_checks.percentage_of(price)
    problems: list[tuple[str, str]] = []
    misplaced = price_checks.percentage_fields_problems(price)

    def number(name: str, value: str | int | None) -> Decimal | None:
        if value is None:
            return None
        try:
            return money.parse_decimal(value)
        except money.InvalidDecimal as exc:
            problems.append((name, str(exc)))
            return None

    if price.tiers is not None and len(price.tiers) > MAX_TIERS:
        return None, [("tiers", f"at most {MAX_TIERS} tiers")]
    tiers = tuple(
        pricing.Tier(
            number(f"tiers[{i}].up_to", t.up_to),
            number(f"tiers[{i}].unit_amount", t.unit_amount) or Decimal(0),
            t.flat_amount,
        )
        for i, t in enumerate(price.tiers or ())
    )
    parsed = pricing.Price(
        model=price.model,
        unit_amount=number("unit_amount", price.unit_amount),
        tiers=tiers,
        package_size=number("package_size", price.package_size),
        package_amount=price.package_amount,
    )
    if problems or misplaced:
        return None, problems + misplaced
    for tier_index, tier in enumerate(price.tiers or ()):
        if tier.flat_amount > MAX_FEE:
            problems.append((f"tiers[{tier_index}].flat_amount", f"at most {MAX_FEE}"))
    if price.package_amount is not None and price.package_amount > MAX_FEE:
        problems.append(("package_amount", f"at most {MAX_FEE}"))
    if price.tiers is not None and price.model in ("per_unit", "package"):
        problems.append(("tiers", f"a {price.model} price has no tiers"))
    problems.extend(pricing.validate_price(parsed))
    return (None, problems) if problems else (parsed, [])


def _stored(price: Rate) -> dict[str, Any]:
    if isinstance(price, percentage.PercentagePrice):
        return price_checks.stored_percentage(price)
    text = money.format_decimal
    stored: dict[str, Any] = {"model": price.model}
    if price.model == "per_unit":
        stored["unit_amount"] = text(price.unit_amount or Decimal(0))
    elif price.model == "package":
        stored["package_size"] = text(price.package_size or Decimal(0))
        stored["package_amount"] = price.package_amount
    else:
        stored["tiers"] = [
            {
                "up_to": None if t.up_to is None else text(t.up_to),
                "unit_amount": text(t.unit_amount),
                "flat_amount": t.flat_amount,
            }
            for t in price.tiers
        ]
    return stored
