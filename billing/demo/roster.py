"""The demo's customers: who they are, what they buy, how they pay and what happens to them.

Deterministic: the same size gives the same roster. The first customers each play one of the
stories a finance team meets (a card that fails and is replaced, one that keeps failing, a
customer that leaves, one in a trial, one that changed plan or seats, one under reverse charge,
one living on promotional credit, one with a coupon, one with a credit note, one whose AI usage
passes its plan's threshold every month, one whose AI spend alert fires); the rest pay on time.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from billing.alerts.schemas import AlertCreate
from billing.credits.schemas import CreditGrantCreate
from billing.customers.schemas import Card
from billing.tenants.addresses import Address

# Stories, in roster order; every roster has each of them once.
RECOVERS_SOFT = "recovers_soft"  # insufficient funds, a new card five days later
RECOVERS_HARD = "recovers_hard"  # an expired card, replaced three days later
EXHAUSTED = "exhausted"  # declined at every retry until dunning gives up
EXHAUSTED_AUTH = "exhausted_auth"  # never completes the authentication the bank asks for
LEAVES_FAILING = "leaves_failing"  # switches to a failing card, leaves, last invoice in dunning
LEAVES_TODAY = "leaves_today"  # left hours ago: its last invoice is still a draft
LEAVES_RECENTLY = "leaves_recently"
VOIDED = "voided"  # finance voids its first invoice while it is a draft
LATE_SYNC = "late_sync"  # a device uploads a day of usage after the invoice was finalized
MID_TRIAL = "mid_trial"  # signed up days ago with a 14-day trial that still runs
UPGRADED = "upgraded"  # Starter to Growth in the middle of last month: a closing and a prorated invoice
ADDS_SEATS = "adds_seats"  # Starter for five seats, eight since the middle of last month
PENDING_DOWNGRADE = "pending_downgrade"  # Scale until the end of this period, then Growth
REVERSE_CHARGE = "reverse_charge"  # a German business with a VAT id: no VAT, a reverse-charge note
PROMO_CREDITS = "promo_credits"  # signed up with a launch credit that pays every invoice so far
COUPON = "coupon"  # redeemed LAUNCH20 at signup: 20% off its first three months
CREDIT_NOTE = "credit_note"  # finance credits part of last month's paid invoice to its balance
THRESHOLD = "threshold"  # AI usage passes the plan's threshold mid-month: a threshold invoice, charged
SPEND_ALERT = "spend_alert"  # set an AI spend alert at signup; it fires, and emails, every month
STORIES = (
    RECOVERS_SOFT,
    RECOVERS_HARD,
    EXHAUSTED,
    EXHAUSTED_AUTH,
    LEAVES_FAILING,
    LEAVES_TODAY,
    LEAVES_RECENTLY,
    VOIDED,
    LATE_SYNC,
    MID_TRIAL,
    UPGRADED,
    ADDS_SEATS,
    PENDING_DOWNGRADE,
    REVERSE_CHARGE,
    PROMO_CREDITS,
    COUPON,
    CREDIT_NOTE,
    THRESHOLD,
    SPEND_ALERT,
)
# The plan each subscription-change story starts on, and where it goes.
STORY_PLAN = {
    MID_TRIAL: "growth",
    UPGRADED: "starter",
    ADDS_SEATS: "starter",
    PENDING_DOWNGRADE: "scale",
    REVERSE_CHARGE: "growth",
    PROMO_CREDITS: "starter",
    COUPON: "growth",
    CREDIT_NOTE: "growth",
    THRESHOLD: "ai",
    SPEND_ALERT: "ai",
}
# The usage scale of the AI stories: about $700 of tokens a month, so that the $500 threshold is
# passed once in the second half of each month; about $250 a month, past both alert thresholds.
STORY_SIZE = {THRESHOLD: 80, SPEND_ALERT: 30}
SPEND_ALERT_SETUP = AlertCreate(
    type="spend_amount", name="AI spend this month", thresholds=[10_000, 20_000], email=True
)
UPGRADE_TO, DOWNGRADE_TO = "growth", "growth"
TRIAL_DAYS = 14
TRIAL_SIGNUP = timedelta(days=4, hours=3)  # before now: the trial has ten days left
SEATS_BEFORE, SEATS_AFTER = 5, 8
FIRST_METHOD = {
    RECOVERS_SOFT: "pm_card_chargeDeclinedInsufficientFunds",
    RECOVERS_HARD: "pm_card_chargeDeclinedExpiredCard",
    EXHAUSTED: "pm_card_chargeDeclined",
    EXHAUSTED_AUTH: "pm_card_authenticationRequired",
}
FAILING_LATER = "pm_card_chargeDeclinedInsufficientFunds"
# The reverse-charge customer: where it is, and its VAT id (valid check digits).
STORY_PLACE = {REVERSE_CHARGE: ("Europe/Berlin", "de_DE")}
REVERSE_CHARGE_ADDRESS = Address(line1="Friedrichstraße 68", city="Berlin", postal_code="10117", country="DE")
REVERSE_CHARGE_VAT_ID = "DE136695976"
# The promotional customer's launch credit: more than a Starter customer spends in the history.
PROMO_CREDIT = CreditGrantCreate(name="Launch credit", amount=25_000, category="promotional", priority=10)
PROMO_CREDIT_VALIDITY = timedelta(days=365)
# Finance credits this much of the credit-note customer's last monthly invoice (tax included).
CREDIT_NOTE_AMOUNT = 1_500
# How long before now the leaving customers end their subscription.
LEAVES = {
    LEAVES_FAILING: timedelta(days=3, hours=12),
    LEAVES_TODAY: timedelta(hours=3),
    LEAVES_RECENTLY: timedelta(hours=10),
}

COMPANIES = [
    "Northwind Traders", "Bluebird Analytics", "Copperleaf Labs", "Driftwood Media",
    "Evergreen Logistics", "Foxglove Health", "Granite Peak Software", "Harbor & Finch",
    "Ironbark Security", "Juniper Robotics", "Kestrel Payments", "Lumen Learning",
    "Maple Street Bakery", "Nimbus Weather", "Orchid Travel", "Pinecone Games",
    "Quartz Legal", "Redwood Realty", "Saffron Kitchens", "Tidewater Energy",
    "Umbra Studios", "Vireo Mobility", "Willow Dental", "Xylem Botanicals",
    "Yarrow Insurance", "Zephyr Aero", "Alder & Ash Architects", "Brightline Fitness",
    "Cobalt Freight", "Dune Outdoor", "Ember Coffee Roasters", "Fjord Data",
    "Gullwing Motors", "Heron Biotech", "Indigo Print Works", "Jasper Research",
    "Kite Surf Co", "Lantern Hotels", "Meridian Clinics", "Nova Solar",
]  # fmt: skip
# (timezone, locale) pairs, so that emails show local dates and amounts.
PLACES = [
    ("America/New_York", "en_US"), ("Europe/Berlin", "de_DE"), ("America/Los_Angeles", "en_US"),
    ("Europe/London", "en_GB"), ("Asia/Kolkata", "en_IN"), ("Asia/Tokyo", "ja_JP"),
    ("Australia/Sydney", "en_AU"), ("America/Sao_Paulo", "pt_BR"), ("UTC", "en"),
    ("Asia/Kathmandu", "en"), ("America/Chicago", "en_US"), ("Europe/Paris", "fr_FR"),
]  # fmt: skip
MAILBOXES = ["billing", "accounts", "finance", "ap", "ops"]
# (plan, weight): most customers are small. A story's customer is on a classic plan unless the
# story names one; the others may also run on the AI Platform.
PLAN_MIX = [("starter", 5), ("growth", 4), ("scale", 1)]
OTHERS_MIX = [*PLAN_MIX, ("ai", 2)]
CARDS = {"pm_card_visa": "visa", "pm_card_mastercard": "mastercard", "pm_card_amex": "amex"}
MAX_CUSTOMERS = len(COMPANIES)
MIN_CUSTOMERS = len(STORIES)
EXPIRING = (MIN_CUSTOMERS, MIN_CUSTOMERS + 5)  # roster positions


@dataclass(frozen=True)
class Persona:
    external_id: str
    name: str
    email: str
    timezone: str
    locale: str
    plan: str
    payment_method: str
    card: Card
    signup_day: int  # days after the start of the history
    signup_minute: int  # minute of that day (UTC)
    size: int  # usage scale, 1..100
    growth: int  # usage growth, per mille per day
    story: str | None


def cast(count: int, *, now: datetime) -> list[Persona]:
    if not MIN_CUSTOMERS <= count <= MAX_CUSTOMERS:
        raise ValueError(f"the demo has {MIN_CUSTOMERS} to {MAX_CUSTOMERS} customers, not {count}")
    rng = seeded(f"demo-roster-{count}")
    companies = rng.sample(COMPANIES, count)
    return [_persona(index, company, rng, now) for index, company in enumerate(companies)]


def seeded(seed: str) -> random.Random:
    """A generator that draws the same demo data on every run and machine."""
    return random.Random(seed)  # noqa: S311 (sample data, nothing secret)


def _persona(index: int, company: str, rng: random.Random, now: datetime) -> Persona:
    story = STORIES[index] if index < len(STORIES) else None
    slug = re.sub(r"[^a-z0-9]+", "-", company.lower()).strip("-")
    timezone, locale = STORY_PLACE.get(story or "") or PLACES[index % len(PLACES)]
    plans, weights = zip(*(PLAN_MIX if story else OTHERS_MIX), strict=True)
    method = FIRST_METHOD.get(story or "") or rng.choice([*CARDS, "pm_card_visa", "pm_card_visa"])
    return Persona(
        external_id=slug,
        name=company,
        email=f"{MAILBOXES[index % len(MAILBOXES)]}@{slug}.example.com",
        timezone=timezone,
        locale=locale,
        plan=STORY_PLAN.get(story or "") or rng.choices(plans, weights)[0],
        payment_method=method,
        # Two customers' cards run out this month or the next: they get expiry notices.
        card=card(rng, method, now=now, months_left=index % 2 if index in EXPIRING else rng.randint(6, 48)),
        # The stories start early enough to play out in full before now.
        signup_day=rng.randint(0, 4) if story else rng.randint(0, 30),
        signup_minute=rng.randint(7 * 60, 19 * 60),
        size=STORY_SIZE.get(story or "") or rng.randint(1, 100),
        growth=rng.randint(-1, 6),
        story=story,
    )


def card(rng: random.Random, method: str, *, now: datetime, months_left: int) -> Card:
    """The card behind a payment method, valid until the end of the month ``months_left`` ahead."""
    month = now.year * 12 + now.month - 1 + months_left
    return Card(
        id=f"card_demo{rng.randint(10**9, 10**10 - 1)}",
        brand=CARDS.get(method, "visa"),
        last4=f"{rng.randint(0, 9999):04d}",
        exp_month=month % 12 + 1,
        exp_year=month // 12,
    )
