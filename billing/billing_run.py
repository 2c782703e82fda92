"""``POST /v1/billing/run``: every job of ``billing.jobs`` once, at ``at`` (default now)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, post
from litestar.params import JSONBody

from billing.core.clock import ensure_utc
from billing.core.errors import ValidationFailed
from billing.jobs import Run, run_jobs
from billing.web.auth import ADMIN, scopes
from billing.web.dependencies import Caller, Ctx

AwareDateTime = Annotated[datetime, msgspec.Meta(tz=True)]


class BillingRunIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Frozen, so that an instance may be the default of the handler's body: no body means ``{}``."""

    at: AwareDateTime | None = None


# A run without a body, or with an empty one, is a run of {}: Litestar gives the body parameter
# its default then.
EMPTY_RUN = BillingRunIn()


class BillingRunOut(msgspec.Struct):
    at: datetime
    invoices_created: int
    drafts_recomputed: int
    # Made, finalized and charged at once (progressive billing).
    threshold_invoices: int
    invoices_finalized: int
    payments_attempted: int
    payments_reconciled: int
    dunning_steps: int
    invoices_overdue: int


class BillingRunController(Controller):
    path = "/billing/run"
    tags = ["Invoices"]

    @post(opt=scopes(ADMIN), status_code=200, summary="Do all billing work due by `at` (default now)")
    async def run(
        self, ctx: Ctx, principal: Caller, data: JSONBody[BillingRunIn] = EMPTY_RUN
    ) -> BillingRunOut:
        now = ctx.clock.now()
        at = ensure_utc(data.at) if data.at else now
        if at > now and not ctx.settings.allow_time_travel:
            raise ValidationFailed.field(
                "at", "is in the future; set BILLING_ALLOW_TIME_TRAVEL=1 to allow it"
            )
        done = await run_jobs(ctx, Run(at=at, tenant_id=principal.tenant_id, actor=principal.key_id))
        return BillingRunOut(
            at=at,
            invoices_created=done["close_periods"],
            drafts_recomputed=done["recompute_drafts"],
            threshold_invoices=done["threshold_invoices"],
            invoices_finalized=done["finalize_drafts"],
            payments_attempted=done["payments_charge"],
            payments_reconciled=done["payments_reconcile"],
            dunning_steps=done["dunning"],
            invoices_overdue=done["invoices_overdue"],
        )
