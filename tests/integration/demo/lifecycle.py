"""What the demo's subscription-lifecycle stories must show through the API, whatever the roster
size: a customer mid-trial, one who upgraded last month, one with seats, one with a pending
downgrade. Amounts are recomputed here from the plan fees and the calendar month in Decimal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from billing.demo import roster
from billing.demo.roster import Persona

FEES = {"starter": 1900, "growth": 4900, "scale": 29900}
FINAL = ("open", "paid")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def month_bounds(instant: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The local calendar month holding ``instant``, as UTC instants (a subtraction of two times in
    one zone would ignore a change of summer time in between)."""
    local = instant.astimezone(ZoneInfo(timezone))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(UTC), following.astimezone(UTC)


def fee(base_fee: int, quantity: int, start: datetime, end: datetime, timezone: str) -> int:
    """base fee x seats x seconds / the seconds of the month, half up."""
    month_start, month_end = month_bounds(start, timezone)
    share = Decimal((end - start).total_seconds()) / Decimal((month_end - month_start).total_seconds())
    return int((base_fee * quantity * share).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Api:
    def __init__(self, client: httpx.AsyncClient, info: dict[str, Any]) -> None:
        self.client, self.info = client, info

    async def get(self, path: str, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {self.info['admin_key']}"}
        response = await self.client.get(path, headers=headers, params={"limit": "100", **params})
        assert response.status_code == 200, response.text
        return response.json()

    async def subscriptions(self, persona: Persona) -> list[dict[str, Any]]:
        page = await self.get("/v1/subscriptions", customer=persona.external_id)
        assert page["has_more"] is False
        return list(page["data"])

    async def invoices(self, persona: Persona) -> list[dict[str, Any]]:
        page = await self.get("/v1/invoices", customer=persona.external_id)
        assert page["has_more"] is False
        return list(page["data"])


async def assert_lifecycle_stories(
    client: httpx.AsyncClient, info: dict[str, Any], *, customers: int, now: datetime
) -> None:
    api = Api(client, info)
    cast = {p.story: p for p in roster.cast(customers, now=now) if p.story}
    await _mid_trial(api, cast[roster.MID_TRIAL], now)
    await _upgraded_last_month(api, cast[roster.UPGRADED], now)
    await _adds_seats(api, cast[roster.ADDS_SEATS], now)
    await _pending_downgrade(api, cast[roster.PENDING_DOWNGRADE], now)


async def _mid_trial(api: Api, persona: Persona, now: datetime) -> None:
    [sub] = await api.subscriptions(persona)
    assert (sub["status"], sub["plan_code"]) == ("trialing", "growth")
    assert at(sub["trial_end"]) - at(sub["starts_at"]) == timedelta(days=roster.TRIAL_DAYS)
    assert at(sub["starts_at"]) < now < at(sub["trial_end"])
    assert await api.invoices(persona) == []
    upcoming = await api.get(f"/v1/customers/{persona.external_id}/upcoming-invoice")
    assert {line["kind"] for line in upcoming["lines"]} == {"trial"} and upcoming["total"] == 0
    assert all(line["amount"] == 0 for line in upcoming["lines"])
    assert any(Decimal(line["quantity"]) > 0 for line in upcoming["lines"] if line["meter"])  # usage


async def _upgraded_last_month(api: Api, persona: Persona, now: datetime) -> None:
    subs = await api.subscriptions(persona)
    [old] = [s for s in subs if s["status"] == "ended"]
    [new] = [s for s in subs if s["status"] == "active"]
    assert (old["plan_code"], new["plan_code"]) == ("starter", "growth")
    assert (old["replaced_by"], new["replaces"]) == (new["id"], old["id"])
    switch = at(old["ended_at"])
    assert at(new["starts_at"]) == switch
    this_month, _ = month_bounds(now, persona.timezone)
    last_month, _ = month_bounds(this_month - timedelta(days=1), persona.timezone)
    assert last_month < switch < this_month

    invoices = await api.invoices(persona)
    [closing] = [i for i in invoices if i["subscription"] == old["id"] and at(i["period_end"]) == switch]
    [prorated] = [i for i in invoices if i["subscription"] == new["id"] and at(i["period_start"]) == switch]
    assert at(closing["period_start"]) == last_month and at(prorated["period_end"]) == this_month
    for invoice, plan, start, end in (
        (closing, "starter", last_month, switch),
        (prorated, "growth", switch, this_month),
    ):
        assert invoice["status"] in FINAL and invoice["number"], invoice["id"]
        [base] = [line for line in invoice["lines"] if line["kind"] == "base_fee"]
        assert base["amount"] == fee(FEES[plan], 1, start, end, persona.timezone)
        assert 0 < base["amount"] < FEES[plan]
    assert any(line["meter"] and line["kind"] == "usage" for line in prorated["lines"])


async def _adds_seats(api: Api, persona: Persona, now: datetime) -> None:
    [sub] = await api.subscriptions(persona)
    assert (sub["plan_code"], sub["quantity"], sub["status"]) == ("starter", roster.SEATS_AFTER, "active")
    split = [
        (invoice, [line for line in invoice["lines"] if line["kind"] == "base_fee"])
        for invoice in await api.invoices(persona)
    ]
    [(invoice, (before, after))] = [(invoice, lines) for invoice, lines in split if len(lines) == 2]
    assert invoice["status"] in FINAL
    assert (before["quantity"], after["quantity"]) == (str(roster.SEATS_BEFORE), str(roster.SEATS_AFTER))
    change = at(before["period_end"])
    assert at(invoice["period_start"]) == at(before["period_start"]) < change == at(after["period_start"])
    assert at(after["period_end"]) == at(invoice["period_end"]) <= now
    timezone = persona.timezone
    assert before["amount"] == fee(
        FEES["starter"], roster.SEATS_BEFORE, at(before["period_start"]), change, timezone
    )
    assert after["amount"] == fee(
        FEES["starter"], roster.SEATS_AFTER, change, at(after["period_end"]), timezone
    )


async def _pending_downgrade(api: Api, persona: Persona, now: datetime) -> None:
    subs = await api.subscriptions(persona)
    [current] = [s for s in subs if s["status"] == "active"]
    pending = current["pending_change"]
    assert current["plan_code"] == "scale" and pending is not None
    assert pending["plan_code"] == "growth"
    assert at(pending["effective_at"]) == at(current["current_period_end"]) > now
    [waiting] = [s for s in subs if s["status"] == "scheduled"]
    assert (waiting["replaces"], waiting["starts_at"]) == (current["id"], pending["effective_at"])
