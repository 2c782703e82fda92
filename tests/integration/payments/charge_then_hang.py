"""Run by ``test_stripe_payments``: make the due charges at ``argv[1]`` with the settings of the
environment, so that the test can kill this process while the provider call hangs."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime

from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.settings import Settings
from billing.payments.charge import charge_due


async def main(at: datetime) -> None:
    ctx = AppContext.create(Settings.from_env(), clock=FrozenClock(at))
    try:
        await charge_due(ctx, at=at)
    finally:
        await ctx.close()


if __name__ == "__main__":
    asyncio.run(main(datetime.fromisoformat(sys.argv[1])))
