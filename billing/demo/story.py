"""Three months of the demo tenant's life, replayed through the service's own verbs.

A clock of its own walks from the start of the history to now: customers sign up, their usage
is ingested as it happens, the billing run closes, finalizes and charges each day, dunning
retries, finance steps in, and queued emails are sent, each at the time it would have happened.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.alerts.service import create_alert
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.credit_notes.issue import issue_credit_note
from billing.credit_notes.schemas import CreditNoteCreate
from billing.credits import grants
from billing.customers.schemas import CustomerCreate, CustomerPatch
from billing.customers.service import create_customer, get_customer, update_customer
from billing.demo import roster
from billing.demo.catalog import COUPON_CODE, THRESHOLD_PLANS
from billing.demo.roster import Persona
from billing.demo.usage import Event, customer_events, late_event
from billing.dunning.cases import payment_method_changed
from billing.dunning.models import DunningCase
from billing.invoicing import invoices, periods
from billing.invoicing.changes import Clock, cancel, change
from billing.invoicing.coverage import SUBSCRIPTION_COVERAGE
from billing.invoicing.discounts import create_discount
from billing.invoicing.finalize import void_draft_events
from billing.invoicing.history import has_billing_history
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.schemas import CancelIn, SubscriptionCreate, SubscriptionPatch
from billing.invoicing.subscriptions import create_subscription, get_subscription
from billing.metering.ingest import MAX_BATCH, ingest
from billing.payments.views import PAYMENTS
from billing.tenants.tax_ids import TaxIdIn

DAILY_RUN = timedelta(hours=6)  # the billing run of each day, in UTC
# How often, at most, new usage of customers with a threshold plan or an alert asks for a billing
# run of its own (the scheduler would look within a minute; a run a day would double the build).
WATCHED_RUNS = timedelta(days=3)
# "Last month" is the last calendar month that ended this long before now, so that the invoices
# of a change in it (grace period, then the next daily run) are final by now.
LAST_MONTH_SETTLED = timedelta(days=2)
Action = Callable[[datetime], Awaitable[None]]
# ``POST /v1/billing/run`` for one tenant at a time, as the composition root builds it.
BillingRun = Callable[[AppContext, datetime, str], Awaitable[object]]


class DemoError(RuntimeError):
    """The replay produced something the service refused: a bug in the demo, not in the data."""


class Story:
    def __init__(
        self,
        ctx: AppContext,
        tenant_id: str,
        finance_key_id: str,
        *,
        start: datetime,
        now: datetime,
        billing_run: BillingRun,
    ) -> None:
        self.clock = FrozenClock(start)
        self.billing_run = billing_run
        self.ctx = replace(ctx, clock=self.clock)
        self.tenant_id = tenant_id
        self.finance_key_id = finance_key_id
        self.start, self.now = start, now
        self._actions: list[tuple[datetime, int, Action]] = []
        self._events: list[tuple[datetime, int, Event]] = []
        self._order = itertools.count()
        # Customers whose usage the next billing run must look at, however quiet the day: their
        # plan bills thresholds, or they have an alert. Whether one of them sent usage since.
        self._watched: set[str] = set()
        self._watched_usage = False
        self._last_run = start

    async def play(self, personas: list[Persona]) -> None:
        for persona in personas:
            self._at(self._signup_time(persona), self._signup(persona))
            if persona.story == roster.LEAVES_FAILING:
                self._at(self.now - timedelta(days=12), self._change_card(persona, roster.FAILING_LATER))
        day = self.start + DAILY_RUN
        while day < self.now:
            self._at(day, self._daily_run)
            day += timedelta(days=1)
        self._at(self.now, self.tick)
        while self._actions:
            when, _, action = heapq.heappop(self._actions)
            self.clock.set(when)
            await action(when)

    def _signup_time(self, persona: Persona) -> datetime:
        if persona.story == roster.MID_TRIAL:  # recently enough that the trial still runs
            return (self.now - roster.TRIAL_SIGNUP).replace(microsecond=0)
        return self.start + timedelta(days=persona.signup_day, minutes=persona.signup_minute)

    def _at(self, when: datetime, action: Action) -> None:
        if when <= self.now:
            heapq.heappush(self._actions, (when, next(self._order), action))

    async def tick(self, at: datetime) -> None:
        """The usage sent until ``at``, then what the scheduler does at ``at``."""
        await self._ingest_until(at)
        await self._bill(at)

    async def _daily_run(self, at: datetime) -> None:
        await self._ingest_until(at)
        if await self._billing_due(at):
            await self._bill(at)

    async def _bill(self, at: datetime) -> None:
        self._watched_usage, self._last_run = False, at
        await self.billing_run(self.ctx, at, self.tenant_id)

    async def _billing_due(self, at: datetime) -> bool:
        """Whether the billing run has anything to do at ``at``. On most days it has not, and
        asking it anyway would make the demo several times slower."""
        if self._watched_usage and at - self._last_run >= WATCHED_RUNS:
            return True  # a threshold invoice or an alert may be due
        tenant = self.tenant_id
        checks = [
            sa.select(Subscription.id).where(
                Subscription.tenant_id == tenant,
                sa.or_(Subscription.next_period_end <= at, Subscription.usage_changed_at.is_not(None)),
            ),
            sa.select(Invoice.id).where(
                Invoice.tenant_id == tenant, Invoice.status == "draft", Invoice.grace_ends_at <= at
            ),
            sa.select(DunningCase.id).where(
                DunningCase.tenant_id == tenant,
                DunningCase.status == "active",
                DunningCase.next_action_at <= at,
            ),
        ]
        async with self.ctx.database.read() as session:
            for check in checks:
                if await session.scalar(check.limit(1)) is not None:
                    return True
        return False

    async def _ingest_until(self, at: datetime) -> None:
        due: list[bytes] = []
        while self._events and self._events[0][0] < at:
            event = heapq.heappop(self._events)[2]
            self._watched_usage = self._watched_usage or event.customer in self._watched
            due.append(event.raw)
        for first in range(0, len(due), MAX_BATCH):
            await self._ingest(due[first : first + MAX_BATCH], at)

    async def _ingest(self, raw: list[bytes], at: datetime) -> None:
        result = await ingest(self.ctx.database, self.tenant_id, raw, now=at, coverage=SUBSCRIPTION_COVERAGE)
        refused = [r for r in result.results if r.status not in ("accepted", "duplicate")]
        if refused:
            raise DemoError(f"{len(refused)} demo events were refused, e.g. {refused[0].message}")

    def _queue_events(self, events: list[Event]) -> None:
        for event in events:
            heapq.heappush(self._events, (event.timestamp, next(self._order), event))

    # --- what the customers and finance do ----------------------------------------------------

    def _signup(self, persona: Persona) -> Action:
        async def act(at: datetime) -> None:
            customer = _customer(persona)
            subscription = SubscriptionCreate(
                customer=persona.external_id,
                plan=persona.plan,
                starts_at=at,
                quantity=roster.SEATS_BEFORE if persona.story == roster.ADDS_SEATS else 1,
                trial_days=roster.TRIAL_DAYS if persona.story == roster.MID_TRIAL else None,
            )
            async with self.ctx.database.transaction() as session:
                await create_customer(session, self.tenant_id, customer, now=at)
                await _signup_offer(session, self.tenant_id, persona, at=at)
                if persona.story == roster.SPEND_ALERT:
                    alert = msgspec.structs.replace(roster.SPEND_ALERT_SETUP, customer=persona.external_id)
                    await create_alert(session, self.tenant_id, alert, now=at)
                sub = await create_subscription(session, self.tenant_id, subscription, now=at)
            if persona.plan in THRESHOLD_PLANS or persona.story == roster.SPEND_ALERT:
                self._watched.add(persona.external_id)
            leaves = roster.LEAVES.get(persona.story or "")
            until = self.now - leaves if leaves else self.now
            upgrade = self._plan_changes(persona, sub.id, sub.timezone)
            self._queue_events(customer_events(persona, at, upgrade or until, origin=self.start))
            if leaves:
                self._at(until, self._leave(sub.id))
            if persona.story == roster.CREDIT_NOTE:
                self._credit_last_month(sub.id, sub.timezone)
            end = sub.next_period_end
            if end is not None:
                if end - at < timedelta(days=2):  # too short a first period to tell a story with
                    end = periods.next_month_start(end, sub.timezone)
                self._follow_up(persona, sub.id, end)

        return act

    def _credit_last_month(self, subscription_id: str, timezone: str) -> None:
        """Finance credits part of last month's invoice two days into this month (by then it is
        paid: it was finalized when its grace period ended, and charged at once)."""
        month_end = periods.month_start(self.now - LAST_MONTH_SETTLED, timezone)
        self._at(month_end + LAST_MONTH_SETTLED, self._credit_note(subscription_id, month_end))

    def _follow_up(self, persona: Persona, subscription_id: str, end: datetime) -> None:
        """The story's turn once its first (long enough) period has ended at ``end``."""
        if persona.story == roster.RECOVERS_SOFT:
            self._at(end + timedelta(days=5, hours=10), self._change_card(persona, "pm_card_visa"))
        elif persona.story == roster.RECOVERS_HARD:
            self._at(end + timedelta(days=3, hours=2), self._change_card(persona, "pm_card_mastercard"))
        elif persona.story == roster.VOIDED:
            self._at(end + timedelta(hours=6), self._void_draft(subscription_id, end))
        elif persona.story == roster.LATE_SYNC:
            offline = late_event(persona, end - timedelta(hours=12))
            self._at(end + timedelta(days=3, hours=4), self._late_upload(offline))

    def _plan_changes(self, persona: Persona, subscription_id: str, timezone: str) -> datetime | None:
        """Schedule the story's plan or seat change; the instant of an upgrade (the old plan's
        usage stops there), else None."""
        last_month = periods.month_start(self.now - LAST_MONTH_SETTLED, timezone) - timedelta(days=1)
        mid_last_month = periods.month_start(last_month, timezone) + timedelta(days=11, hours=14)
        if persona.story == roster.UPGRADED:
            self._at(mid_last_month, self._upgrade(persona, subscription_id))
            return mid_last_month
        if persona.story == roster.ADDS_SEATS:
            seats = SubscriptionPatch(quantity=roster.SEATS_AFTER)
            self._at(mid_last_month + timedelta(days=6), self._change(subscription_id, seats))
        elif persona.story == roster.PENDING_DOWNGRADE:
            # Two days ago, or early this month: the switch waits for this period's end.
            this_month = periods.month_start(self.now, timezone) + timedelta(hours=1)
            at = min(self.now, max(self.now - timedelta(days=2), this_month)).replace(microsecond=0)
            downgrade = SubscriptionPatch(plan=roster.DOWNGRADE_TO, when="period_end")
            self._at(at, self._change(subscription_id, downgrade))
        return None

    def _upgrade(self, persona: Persona, subscription_id: str) -> Action:
        """A plan change "now": the old plan's usage so far goes in first, the new plan's follows."""
        upgraded = replace(persona, plan=roster.UPGRADE_TO)
        switch = self._change(subscription_id, SubscriptionPatch(plan=roster.UPGRADE_TO))

        async def act(at: datetime) -> None:
            await self._ingest_until(at)
            await switch(at)
            self._queue_events(customer_events(upgraded, at, self.now, origin=self.start))

        return act

    def _change(self, subscription_id: str, patch: SubscriptionPatch) -> Action:
        async def act(at: datetime) -> None:
            async with self.ctx.database.transaction() as session:
                sub = await get_subscription(session, self.tenant_id, subscription_id, lock=True)
                await change(session, sub, patch, Clock(at, actor="demo"))

        return act

    def _change_card(self, persona: Persona, method: str) -> Action:
        """The customer saves another card; open dunning cases retry it at once."""

        async def act(at: datetime) -> None:
            rng = roster.seeded(f"{persona.external_id}:{method}")
            card = roster.card(rng, method, now=self.now, months_left=rng.randint(24, 48))
            async with self.ctx.database.transaction() as session:
                customer = await get_customer(session, self.tenant_id, persona.external_id)
                patch = CustomerPatch(default_payment_method=method, card=card)
                await update_customer(session, customer, patch, now=at, billing_history=has_billing_history)
                await payment_method_changed(session, customer.id, at=at)

        return act

    def _leave(self, subscription_id: str) -> Action:
        async def act(at: datetime) -> None:
            async with self.ctx.database.transaction() as session:
                sub = await get_subscription(session, self.tenant_id, subscription_id, lock=True)
                await cancel(session, sub, CancelIn(when="now"), Clock(at, actor="demo"))

        return act

    def _void_draft(self, subscription_id: str, period_end: datetime) -> Action:
        """Finance voids an invoice while it is a draft (a goodwill gesture)."""

        async def act(at: datetime) -> None:
            await self.tick(at)
            async with self.ctx.database.transaction() as session:
                sub = await get_subscription(session, self.tenant_id, subscription_id, lock=True)
                query = sa.select(Invoice).where(
                    Invoice.subscription_id == sub.id, Invoice.period_end == period_end
                )
                draft = (await session.scalars(query)).one()
                await void_draft_events(session, sub, draft)
                await invoices.void(session, draft, at=at, actor=self.finance_key_id, payments=PAYMENTS)

        return act

    def _credit_note(self, subscription_id: str, period_end: datetime) -> Action:
        """Part of a paid invoice goes back to the customer's credit balance (the exports it
        could not run during an outage)."""

        async def act(at: datetime) -> None:
            await self.tick(at)
            async with self.ctx.database.read() as session:
                query = sa.select(Invoice.id, Invoice.status).where(
                    Invoice.subscription_id == subscription_id,
                    Invoice.period_end == period_end,
                    Invoice.billing_reason == "subscription_cycle",
                )
                invoice_id, status = (await session.execute(query)).one()
            if status != "paid":
                raise DemoError(f"invoice {invoice_id} is {status}, not paid, when its credit note is due")
            note = CreditNoteCreate(
                reason="product_unsatisfactory",
                refund="credit_balance",
                amount=roster.CREDIT_NOTE_AMOUNT,
                memo="Report exports were unavailable for two days.",
            )
            await issue_credit_note(
                self.ctx, self.tenant_id, invoice_id, note, actor=self.finance_key_id, may_refund=False
            )

        return act

    def _late_upload(self, event: Event) -> Action:
        async def act(at: datetime) -> None:
            await self._ingest([event.raw], at)

        return act


def _customer(persona: Persona) -> CustomerCreate:
    customer = CustomerCreate(
        external_id=persona.external_id,
        email=persona.email,
        name=persona.name,
        timezone=persona.timezone,
        locale=persona.locale,
        default_payment_method=persona.payment_method,
        card=persona.card,
        metadata={"source": "demo"},
    )
    if persona.story != roster.REVERSE_CHARGE:
        return customer
    return msgspec.structs.replace(
        customer,
        address=roster.REVERSE_CHARGE_ADDRESS,
        tax_exempt="reverse",
        tax_ids=[TaxIdIn(type="eu_vat", value=roster.REVERSE_CHARGE_VAT_ID)],
    )


async def _signup_offer(session: AsyncSession, tenant_id: str, persona: Persona, *, at: datetime) -> None:
    """The launch credit or coupon a story's customer signs up with."""
    if persona.story not in (roster.PROMO_CREDITS, roster.COUPON):
        return
    customer = await get_customer(session, tenant_id, persona.external_id)
    if persona.story == roster.PROMO_CREDITS:
        data = msgspec.structs.replace(roster.PROMO_CREDIT, expires_at=at + roster.PROMO_CREDIT_VALIDITY)
        await grants.add_grant(session, await grants.new_grant(session, customer, data, now=at), now=at)
    elif persona.story == roster.COUPON:
        await create_discount(session, customer, COUPON_CODE, now=at)
