"""The ``billing`` command: serve, worker, migrate, tenant and api-key administration."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from billing import jobs
from billing.core.context import AppContext
from billing.core.errors import ApiError
from billing.core.logs import configure_logging
from billing.core.migrate import upgrade
from billing.core.scheduler import Scheduler
from billing.core.settings import Settings, SettingsError
from billing.tenants import dev as devtenant
from billing.tenants import service
from billing.web.auth import Scope

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _with_context(settings: Settings, work: Callable[[AppContext], Awaitable[T]]) -> T:
    async def run() -> T:
        ctx = AppContext.create(settings)
        try:
            return await work(ctx)
        finally:
            await ctx.close()

    try:
        return asyncio.run(run())
    except ApiError as exc:
        raise click.ClickException(exc.detail) from exc
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"database error ({type(exc.orig).__name__}); has `billing migrate` been run?"
        ) from exc


def _emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else "\n".join(lines))


@click.group()
def main() -> None:
    """Usage-based billing and dunning service."""


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    upgrade(settings.database_url)
    click.echo("database is up to date", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the API (and the scheduler unless BILLING_SCHEDULER=off)."""
    import uvicorn

    from billing.app import create_app
    from billing.web.slow_clients import server_options

    settings = _settings()
    if settings.dialect == "sqlite":
        upgrade(settings.database_url)
    uvicorn.run(create_app(settings), host=host, port=port, **server_options(settings))


@main.command()
def worker() -> None:
    """Run the scheduler's ticks without the HTTP server (extra replicas)."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def run(ctx: AppContext) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        scheduler = Scheduler(ctx, jobs.ticks())
        scheduler.start()
        try:
            await stop.wait()
        finally:
            scheduler.shutdown()

    _with_context(settings, run)


@main.group()
def tenant() -> None:
    """Tenant administration."""


@tenant.command("create")
@click.option("--name", required=True)
@click.option("--currency", default="USD", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def tenant_create(name: str, currency: str, as_json: bool) -> None:
    """Create a tenant and its first admin key (shown once)."""

    async def run(ctx: AppContext) -> dict[str, Any]:
        async with ctx.database.transaction() as session:
            now = ctx.clock.now()
            created = await service.create_tenant(session, name=name, currency=currency.upper(), now=now)
            key, plaintext = await service.create_api_key(
                session, tenant_id=created.id, scope=Scope.ADMIN, name="admin", now=now
            )
        return {"tenant_id": created.id, "name": created.name, "api_key_id": key.id, "api_key": plaintext}

    data = _with_context(_settings(), run)
    _emit(data, as_json, [f"tenant: {data['tenant_id']}", f"admin key (shown once): {data['api_key']}"])


@main.group("api-key")
def api_key() -> None:
    """API key administration."""


@api_key.command("create")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--scope", type=click.Choice([s.value for s in Scope]), required=True)
@click.option("--name", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def api_key_create(tenant_id: str, scope: str, name: str | None, as_json: bool) -> None:
    """Create an API key (shown once)."""

    async def run(ctx: AppContext) -> dict[str, Any]:
        async with ctx.database.transaction() as session:
            key, plaintext = await service.create_api_key(
                session, tenant_id=tenant_id, scope=Scope(scope), name=name, now=ctx.clock.now()
            )
        return {"api_key_id": key.id, "tenant_id": tenant_id, "scope": scope, "api_key": plaintext}

    data = _with_context(_settings(), run)
    _emit(data, as_json, [f"{data['scope']} key {data['api_key_id']} (shown once): {data['api_key']}"])


@api_key.command("revoke")
@click.argument("key_id")
def api_key_revoke(key_id: str) -> None:
    """Revoke an API key at once."""

    async def run(ctx: AppContext) -> None:
        async with ctx.database.transaction() as session:
            await service.revoke_api_key(session, key_id, now=ctx.clock.now())

    _with_context(_settings(), run)
    click.echo(f"revoked {key_id}")


@main.command("dev-tenant")
def dev_tenant() -> None:
    """Create the development tenant on first run; print its admin key on every run."""
    settings = _settings()
    if settings.production:
        raise click.ClickException("dev-tenant is for development only")
    info = _with_context(settings, devtenant.ensure)
    click.echo(devtenant.banner(info))


@main.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True, help="Host of the printed URLs")
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the printed URLs")
@click.option("--customers", default=36, show_default=True, type=int, help="Size of a new demo")
def demo_tenant(host: str, port: int, customers: int) -> None:
    """Build the demo tenant on first run (customers, usage, invoices, dunning, emails); print its
    keys on every run."""
    from billing import demo  # builds on most of the service: imported only when asked for

    settings = _settings()
    if settings.production:
        raise click.ClickException("demo is for development only")
    if not demo.MIN_CUSTOMERS <= customers <= demo.MAX_CUSTOMERS:
        raise click.BadParameter(
            f"must be {demo.MIN_CUSTOMERS} to {demo.MAX_CUSTOMERS}", param_hint="--customers"
        )
    configure_logging(settings.log_level, settings.log_format)

    async def run(ctx: AppContext) -> dict[str, Any]:
        return await demo.ensure(
            ctx,
            billing_run=jobs.billing_run,
            customers=customers,
            progress=lambda line: click.echo(line, err=True),
        )

    info = _with_context(settings, run)
    click.echo(demo.banner(info, f"http://{host}:{port}"))


if __name__ == "__main__":
    sys.exit(main())
