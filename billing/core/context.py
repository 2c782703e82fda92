"""What every route, tick and command works with: settings, the database, the clock, the secret box."""

from __future__ import annotations

from dataclasses import dataclass, field

from billing.core.clock import Clock, SystemClock
from billing.core.crypto import SecretBox
from billing.core.db.engine import Database
from billing.core.settings import Settings


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
