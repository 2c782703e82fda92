"""One frozen settings object, read from the ``BILLING_*`` environment variables.

Invalid values fail at start with one message that lists every problem.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "test", "production")
_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no", ""}
STRIPE_API_BASE = "https://api.stripe.com"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name)


class SettingsError(ValueError):
    """The environment does not describe a runnable service."""


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    data_dir: Path = Path("var")
    database_url: str = field(default="", repr=False)
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    smtp_url: str | None = field(default=None, repr=False)
    stripe_api_base: str = STRIPE_API_BASE
    stripe_timeout_seconds: float = 30.0
    stripe_max_network_retries: int = 2
    scheduler: bool = True
    allow_time_travel: bool = False
    max_body_bytes: int = 1024 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 60.0
    log_level: str = "INFO"
    log_format: str = "json"

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def dialect(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; generate the development secret key if needed."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        settings = reader.settings()
        reader.raise_errors()
        return settings


class _Reader:
    """Collects every problem in the environment instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.errors: list[str] = []

    def raw(self, name: str, default: str = "") -> str:
        return self.environ.get(f"BILLING_{name}", default).strip()

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name, default).lower() or default
        if value not in choices:
            self.errors.append(f"BILLING_{name}={value!r}: expected one of {', '.join(choices)}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name).lower() or ("on" if default else "off")
        if value in _TRUE:
            return True
        if value not in _FALSE:
            self.errors.append(f"BILLING_{name}={value!r}: expected on/off (1/0, true/false)")
        return False

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        value = self.raw(name, str(default))
        if not re.fullmatch(r"[0-9]{1,12}", value) or int(value) < minimum:
            self.errors.append(f"BILLING_{name}={value!r}: expected an integer of at least {minimum}")
            return default
        return int(value)

    def seconds(self, name: str, default: str) -> float:
        value = self.raw(name, default)
        if not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", value) or float(value) <= 0:
            self.errors.append(f"BILLING_{name}={value!r}: expected a positive number of seconds")
            return float(default)
        return float(value)

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name) or default
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            valid = parts.scheme in schemes and bool(parts.hostname)
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            valid = False
        if not valid:
            self.errors.append(
                f"BILLING_{name}: expected a {'/'.join(schemes)} URL with a host (and a numeric port)"
            )
        return value.rstrip("/")

    def database_url(self, data_dir: Path) -> str:
        value = self.raw("DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'billing.db'}"
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            self.errors.append(
                "BILLING_DATABASE_URL: expected sqlite+aiosqlite:///<path> or postgresql+asyncpg://..."
            )
        return value

    def secret_keys(self, env: str, data_dir: Path) -> tuple[str, ...]:
        keys = tuple(key.strip() for key in self.raw("SECRET_KEY").split(",") if key.strip())
        if any(len(key) < 32 for key in keys):
            self.errors.append("BILLING_SECRET_KEY: every key must be at least 32 characters")
        if keys:
            return keys
        if env == "production":
            self.errors.append("BILLING_SECRET_KEY is required when BILLING_ENV=production")
            return ()
        return (_development_secret_key(data_dir),)

    def settings(self) -> Settings:
        env = self.choice("ENV", "development", ENVIRONMENTS)
        data_dir = Path(self.raw("DATA_DIR", "var") or "var").resolve()
        time_travel = self.flag("ALLOW_TIME_TRAVEL", False)
        if time_travel and env == "production":
            self.errors.append("BILLING_ALLOW_TIME_TRAVEL cannot be on when BILLING_ENV=production")
        return Settings(
            env=env,
            data_dir=data_dir,
            database_url=self.database_url(data_dir),
            secret_keys=self.secret_keys(env, data_dir),
            smtp_url=self.url("SMTP_URL", None, ("smtp", "smtps")),
            stripe_api_base=self.url("STRIPE_API_BASE", STRIPE_API_BASE, ("http", "https")) or "",
            stripe_timeout_seconds=self.seconds("STRIPE_TIMEOUT_SECONDS", "30"),
            stripe_max_network_retries=self.integer("STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0),
            scheduler=self.flag("SCHEDULER", True),
            allow_time_travel=time_travel,
            max_body_bytes=self.integer("MAX_BODY_BYTES", 1024 * 1024),
            header_timeout_seconds=self.seconds("HEADER_TIMEOUT_SECONDS", "10"),
            body_timeout_seconds=self.seconds("BODY_TIMEOUT_SECONDS", "60"),
            log_level=self.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
            log_format=self.choice("LOG_FORMAT", "json", ("json", "console")),
        )

    def raise_errors(self) -> None:
        if self.errors:
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(self.errors))


def _development_secret_key(data_dir: Path) -> str:
    """A key generated once into the data dir, so that restarts can still decrypt stored secrets."""
    path = data_dir / SECRET_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        draft = data_dir / f".{SECRET_KEY_FILE}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)  # atomic: a concurrent start keeps whichever key landed first
        draft.unlink()
    return path.read_text().strip()
