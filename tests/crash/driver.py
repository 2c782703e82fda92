"""Run by the crash tests as ``python -m tests.crash.driver <at> <tenant id>``: what
``POST /v1/billing/run {"at": at}`` does for that tenant (every job of ``billing.jobs``: the
invoices, the charges, then the outbox, the queued emails and the webhook deliveries), in a
process of its own whose clock stands at ``at``.

A test kills it mid-dispatch and starts it again at a later ``at``. ``billing serve`` would do the
same work, but it claims webhook deliveries on the wall clock, so the claims of a killed server
lapse only after two real minutes; here business time moves the leases along.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime

from billing import jobs
from billing.core.clock import FrozenClock, parse_timestamp
from billing.core.context import AppContext
from billing.core.logs import configure_logging
from billing.core.settings import Settings


async def main(at: datetime, tenant_id: str) -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    ctx = AppContext.create(settings, clock=FrozenClock(at))
    try:
        await jobs.billing_run(ctx, at, tenant_id)
    finally:
        await ctx.close()


if __name__ == "__main__":
    asyncio.run(main(parse_timestamp(sys.argv[1]), sys.argv[2]))
