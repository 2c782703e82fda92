"""The notice that a trial ends soon: ``subscription.trial_will_end``, 72 hours before.

Sent once per subscription and ``trial_end`` (``trial_notice_for`` remembers which end it was
sent for), so moving the end re-arms it, and a plan change's successor inherits it. A trial
shorter than the notice period gets it at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from billing.invoicing.models import Subscription

NOTICE = timedelta(hours=72)
TOPIC = "subscription.trial_will_end"


def due(at: datetime) -> sa.ColumnElement[bool]:
    """Subscriptions whose trial ends within the notice period and was not yet announced."""
    return sa.and_(
        Subscription.trial_end.is_not(None),
        Subscription.trial_end > at,
        Subscription.trial_end <= at + NOTICE,
        sa.or_(
            Subscription.trial_notice_for.is_(None), Subscription.trial_notice_for != Subscription.trial_end
        ),
        sa.or_(Subscription.cancel_at.is_(None), Subscription.cancel_at > Subscription.trial_end),
    )


def is_due(sub: Subscription, at: datetime) -> bool:
    end = sub.trial_end
    return (
        end is not None
        and at < end <= at + NOTICE
        and sub.trial_notice_for != end
        and (sub.cancel_at is None or sub.cancel_at > end)
    )
