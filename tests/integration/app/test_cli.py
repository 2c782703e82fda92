"""The real ``billing`` console script, run in subprocesses against a SQLite file.

The keys it prints are then proven against the app built in-process on the same database.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing.app import create_app
from billing.core.settings import Settings
from billing.web.auth import hash_key

BILLING = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "billing"
CLI_TIMEOUT_SECONDS = 60
ADMIN_KEY_LINE = re.compile(r"admin key: (bk_\S+)")


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    env: dict[str, str]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "billing.db"

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db_path}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BILLING), *args],
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == 0, f"billing {' '.join(args)} failed:\n{result.stderr}"
        return result

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_path) as connection:
            return connection.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A data dir with a migrated database, shared by this module's tests."""
    data_dir = tmp_path_factory.mktemp("cli")
    env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
    env.update(
        BILLING_DATA_DIR=str(data_dir),
        BILLING_DATABASE_URL=f"sqlite+aiosqlite:///{data_dir / 'billing.db'}",
        BILLING_LOG_LEVEL="warning",
    )
    space = Workspace(data_dir, env)
    space.ok("migrate")
    return space


@pytest.fixture(scope="module")
def acme(workspace: Workspace) -> dict[str, Any]:
    result = workspace.ok("tenant", "create", "--name", "Acme", "--currency", "EUR", "--json")
    created: dict[str, Any] = json.loads(result.stdout)
    return created


@asynccontextmanager
async def api(workspace: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, on the CLI's database and with the CLI's generated secret key."""
    secret_key = (workspace.data_dir / "secret_key").read_text().strip()
    settings = Settings(
        env="development",
        data_dir=workspace.data_dir,
        database_url=workspace.database_url,
        secret_keys=(secret_key,),
        scheduler=False,
        log_level="WARNING",
    )
    app = create_app(settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
    finally:
        await app.state.ctx.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- migrate --------------------------------------------------------------------------------


def test_migrate_creates_the_schema(workspace: Workspace) -> None:
    tables = {row[0] for row in workspace.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"tenants", "api_keys", "alembic_version"} <= tables
    assert workspace.query("SELECT count(*) FROM alembic_version") == [(1,)]


def test_the_cli_generates_the_development_secret_key_with_mode_0600(workspace: Workspace) -> None:
    path = workspace.data_dir / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32


# --- tenant create --------------------------------------------------------------------------


def test_tenant_create_prints_the_tenant_and_its_admin_key_as_json(
    workspace: Workspace, acme: dict[str, Any]
) -> None:
    assert acme["tenant_id"].startswith("ten_")
    assert acme["api_key"].startswith("bk_")
    assert acme["api_key_id"].startswith("key_")
    assert acme["name"] == "Acme"
    rows = workspace.query("SELECT name, currency FROM tenants WHERE id = ?", acme["tenant_id"])
    assert rows == [("Acme", "EUR")]


def test_tenant_create_rejects_an_invalid_currency_without_a_traceback(workspace: Workspace) -> None:
    result = workspace.run("tenant", "create", "--name", "Bad Money Ltd", "--currency", "EURO")
    assert result.returncode != 0
    assert "currency" in result.stderr
    assert "ISO 4217" in result.stderr
    assert "Traceback" not in result.stderr
    assert workspace.query("SELECT count(*) FROM tenants WHERE name = 'Bad Money Ltd'") == [(0,)]


# --- api keys -------------------------------------------------------------------------------


async def test_printed_keys_work_and_a_revoked_key_stops_working(
    workspace: Workspace, acme: dict[str, Any]
) -> None:
    created = workspace.ok("api-key", "create", "--tenant", acme["tenant_id"], "--scope", "finance", "--json")
    finance = json.loads(created.stdout)
    assert finance["api_key"].startswith("bk_")
    assert finance["api_key_id"].startswith("key_")
    assert finance["tenant_id"] == acme["tenant_id"]
    assert finance["scope"] == "finance"

    async with api(workspace) as client:
        as_admin = await client.get("/v1/tenant", headers=bearer(acme["api_key"]))
        assert as_admin.status_code == 200
        assert as_admin.json()["id"] == acme["tenant_id"]
        assert as_admin.json()["currency"] == "EUR"
        as_finance = await client.get("/v1/tenant", headers=bearer(finance["api_key"]))
        assert as_finance.status_code == 200
        assert as_finance.json()["id"] == acme["tenant_id"]

    revoked = workspace.ok("api-key", "revoke", finance["api_key_id"])
    assert finance["api_key_id"] in revoked.stdout

    async with api(workspace) as client:
        response = await client.get("/v1/tenant", headers=bearer(finance["api_key"]))
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "unauthorized"
        still_admin = await client.get("/v1/tenant", headers=bearer(acme["api_key"]))
        assert still_admin.status_code == 200


def test_api_key_create_for_an_unknown_tenant_fails_clearly(workspace: Workspace) -> None:
    result = workspace.run("api-key", "create", "--tenant", "ten_doesnotexist", "--scope", "finance")
    assert result.returncode != 0
    assert "ten_doesnotexist" in result.stderr
    assert "No tenant" in result.stderr
    assert "Traceback" not in result.stderr
    assert "bk_" not in result.stdout


def test_api_key_revoke_of_an_unknown_key_fails_clearly(workspace: Workspace) -> None:
    result = workspace.run("api-key", "revoke", "key_doesnotexist")
    assert result.returncode != 0
    assert "key_doesnotexist" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_database_stores_only_hashes_of_keys(workspace: Workspace, acme: dict[str, Any]) -> None:
    plaintext = acme["api_key"]
    stored = workspace.query("SELECT key_hash FROM api_keys WHERE id = ?", acme["api_key_id"])
    assert stored == [(hash_key(plaintext),)]
    files = sorted(workspace.data_dir.glob("billing.db*"))  # the database, its WAL and shared memory
    assert workspace.db_path in files
    for path in files:
        content = path.read_bytes()
        assert plaintext.encode() not in content, path.name
        assert plaintext[3:].encode() not in content, path.name


# --- dev-tenant -----------------------------------------------------------------------------


def test_dev_tenant_is_created_once_and_its_key_printed_every_time(workspace: Workspace) -> None:
    first = workspace.ok("dev-tenant")
    second = workspace.ok("dev-tenant")
    first_key = ADMIN_KEY_LINE.search(first.stdout)
    second_key = ADMIN_KEY_LINE.search(second.stdout)
    assert first_key is not None
    assert second_key is not None
    assert first_key.group(1) == second_key.group(1)
    assert workspace.query("SELECT count(*) FROM tenants WHERE name = 'Development'") == [(1,)]
    saved = workspace.data_dir / "dev-tenant.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["api_key"] == first_key.group(1)
