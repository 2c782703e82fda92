"""The ``make run`` path with the demo: ``billing migrate``, ``billing demo`` (twice), ``billing serve``.

Real subprocesses on a temporary data dir (default SQLite), at the demo's default size.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.e2e.test_serve import ADMIN_KEY_LINE, BILLING, TENANT_LINE, Server, clean_env

FINANCE_KEY_LINE = re.compile(r"finance key: (bk_\S+)")
DEMO_TIMEOUT_SECONDS = 240
TABLES = ("tenants", "api_keys", "customers", "subscriptions", "usage_events", "invoices", "payments")
TABLES += ("dunning_cases", "notifications", "outbox")


def billing(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [str(BILLING), *args],
        env=clean_env(data_dir),
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"billing {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def printed_keys(banner: str) -> tuple[str, str, str]:
    tenant, admin, finance = (line.search(banner) for line in (TENANT_LINE, ADMIN_KEY_LINE, FINANCE_KEY_LINE))
    assert tenant is not None and admin is not None and finance is not None, banner
    return tenant.group(1), admin.group(1), finance.group(1)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def row_counts(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "billing.db") as connection:
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def test_the_demo_is_built_once_and_served_with_the_keys_it_prints(tmp_path: Path) -> None:
    billing(tmp_path, "migrate")
    started = time.monotonic()
    first = billing(tmp_path, "demo")
    print(f"billing demo took {time.monotonic() - started:.1f} s")
    tenant_id, admin_key, finance_key = printed_keys(first)
    assert "http://127.0.0.1:8000/finance" in first
    built = row_counts(tmp_path)
    assert (built["tenants"], built["customers"]) == (1, 36)
    emails = sorted(path.name for path in (tmp_path / "outbox").glob("*.eml"))
    assert built["notifications"] > 0 and len(emails) == built["notifications"]

    again = billing(tmp_path, "demo", "--host", "localhost", "--port", "9000")
    assert printed_keys(again) == (tenant_id, admin_key, finance_key)
    assert "http://localhost:9000/finance" in again
    assert row_counts(tmp_path) == built
    assert sorted(path.name for path in (tmp_path / "outbox").glob("*.eml")) == emails

    server = Server(tmp_path)
    try:
        server.wait_ready()
        with server.client() as client:
            customers = client.get("/v1/customers", params={"limit": 100}, headers=bearer(admin_key))
            assert customers.status_code == 200, customers.text
            assert (len(customers.json()["data"]), customers.json()["has_more"]) == (36, False)
            tenant = client.get("/v1/tenant", headers=bearer(admin_key)).json()
            assert tenant["id"] == tenant_id
            for status in ("draft", "open", "paid", "void", "uncollectible"):
                listed = client.get("/v1/invoices", params={"status": status}, headers=bearer(finance_key))
                assert listed.status_code == 200 and listed.json()["data"], (status, listed.text)
    finally:
        server.kill()


def test_the_demo_refuses_to_run_in_production(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BILLING), "demo"],
        env=clean_env(tmp_path, BILLING_ENV="production", BILLING_SECRET_KEY="k" * 40),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "development only" in result.stderr
    assert not (tmp_path / "demo-tenant.json").exists()
