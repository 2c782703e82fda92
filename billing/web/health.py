"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import structlog
from litestar import Controller, get
from sqlalchemy.exc import SQLAlchemyError

from billing.core.errors import ServiceUnavailable
from billing.web.dependencies import Ctx
from billing.web.openapi import problem

READY_TIMEOUT_SECONDS = 3
log = structlog.get_logger("billing.web.health")


class HealthController(Controller):
    path = "/health"
    tags = ["Operations"]
    security = [{}]  # public: probes carry no API key

    @get("/live", summary="The process is up")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="The database answers a round trip", responses={503: problem(503)})
    async def ready(self, ctx: Ctx) -> dict[str, str]:
        try:
            await asyncio.wait_for(ctx.database.ping(), READY_TIMEOUT_SECONDS)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("database_unavailable", error_type=type(exc).__name__)
            raise ServiceUnavailable("The database is unavailable", code="database_unavailable") from exc
        return {"status": "ok", "database": ctx.database.dialect}
