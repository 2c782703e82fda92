"""What every route, tick and command works with: settings, the database, the clock, the secret box."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from billing.auth import Principal
from billing.clock import Clock, SystemClock
from billing.crypto import SecretBox
from billing.db import Database
from billing.errors import Unauthorized
from billing.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    database: Database
    clock: Clock
    box: SecretBox = field(repr=False)

    @classmethod
    def create(cls, settings: Settings, *, clock: Clock | None = None) -> AppContext:
        return cls(
            settings=settings,
            database=Database(settings.database_url),
            clock=clock or SystemClock(),
            box=SecretBox(settings.secret_keys),
        )

    async def close(self) -> None:
        await self.database.dispose()


def provide_context(state: State) -> AppContext:
    ctx: AppContext = state.ctx
    return ctx


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    if not isinstance(request.auth, Principal):
        raise Unauthorized()
    return request.auth


# Route parameter types: ``ctx: Ctx`` and ``principal: Caller`` are injected by name.
Ctx = NamedDependency[AppContext]
Caller = NamedDependency[Principal]
