"""The ``make run`` path end to end: ``billing migrate``, ``billing dev-tenant``, ``billing serve``.

Real subprocesses on a temporary data dir (default SQLite), talked to over 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

BILLING = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "billing"
READY_DEADLINE_SECONDS = 30
STOP_DEADLINE_SECONDS = 10
ADMIN_KEY_LINE = re.compile(r"admin key: (bk_\S+)")
TENANT_LINE = re.compile(r"tenant: +(ten_\S+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
    env["BILLING_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run_cli(data_dir: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BILLING), *args],
        env=clean_env(data_dir, **extra_env),
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"billing {' '.join(args)} failed:\n{result.stderr}"
    return result


def wait_for(condition: Callable[[], bool], deadline_seconds: float, what: str) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_seconds} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class DevTenant:
    tenant_id: str
    admin_key: str


def make_run_setup(data_dir: Path) -> DevTenant:
    """The first two steps of ``make run``."""
    run_cli(data_dir, "migrate")
    banner = run_cli(data_dir, "dev-tenant").stdout
    key, tenant = ADMIN_KEY_LINE.search(banner), TENANT_LINE.search(banner)
    assert key is not None, banner
    assert tenant is not None, banner
    return DevTenant(tenant_id=tenant.group(1), admin_key=key.group(1))


class Process:
    """A ``billing`` subprocess whose output goes to files (no pipe to fill up)."""

    def __init__(self, data_dir: Path, name: str, *args: str, **extra_env: str) -> None:
        self.stdout_path = data_dir / f"{name}.stdout"
        self.stderr_path = data_dir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [str(BILLING), *args],
                env=clean_env(data_dir, **extra_env),
                cwd=data_dir,
                stdout=out,
                stderr=err,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, then the exit status; fails the test if it takes longer than the deadline."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"did not exit within {STOP_DEADLINE_SECONDS} s of SIGTERM:\n{self.stderr}"
            ) from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=STOP_DEADLINE_SECONDS)


class Server(Process):
    def __init__(
        self, data_dir: Path, name: str = "serve", *, port: int | None = None, **extra_env: str
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            data_dir, name, "serve", "--host", "127.0.0.1", "--port", str(self.port), **extra_env
        )

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"billing serve exited with {self.popen.returncode}:\n{self.stderr}")
            try:
                return httpx.get(f"{self.base_url}/health/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, READY_DEADLINE_SECONDS, "/health/ready to answer 200")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every complete line of stderr, each of which must be a JSON object."""
        text = self.stderr
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def exited_cleanly_or_by_sigterm(returncode: int) -> bool:
    return returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM)


def tenant_count(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "billing.db") as connection:
        count: int = connection.execute("SELECT count(*) FROM tenants").fetchone()[0]
        return count


@dataclass
class Running:
    server: Server
    data_dir: Path
    dev: DevTenant
    client: httpx.Client

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.dev.admin_key}"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("serve")
    dev = make_run_setup(data_dir)
    server = Server(data_dir)
    try:
        server.wait_ready()
        with server.client() as client:
            yield Running(server, data_dir, dev, client)
    finally:
        server.kill()


# --- the running server ---------------------------------------------------------------------


def test_ready_reports_the_sqlite_database(running: Running) -> None:
    response = running.client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "sqlite"}
    assert running.client.get("/health/live").status_code == 200


def test_openapi_schema_is_version_3_1(running: Running) -> None:
    response = running.client.get("/schema")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1")
    assert "/v1/tenant" in schema["paths"]


def test_interactive_docs_are_served_as_html(running: Running) -> None:
    response = running.client.get("/schema/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()


def test_the_dev_tenant_admin_key_reads_the_tenant(running: Running) -> None:
    response = running.client.get("/v1/tenant", headers=running.auth())
    assert response.status_code == 200
    assert response.json()["id"] == running.dev.tenant_id
    assert response.json()["currency"] == "USD"


def test_a_request_without_a_key_is_refused(running: Running) -> None:
    response = running.client.get("/v1/tenant")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_metrics_count_requests(running: Running) -> None:
    assert running.client.get("/health/live").status_code == 200
    response = running.client.get("/metrics")
    assert response.status_code == 200
    assert "billing_requests_total" in response.text
    assert re.search(r'billing_requests_total\{[^}]*path="/health/live"[^}]*\} [1-9]', response.text)


@pytest.mark.parametrize(
    ("path", "with_key", "status"),
    [
        ("/health/live", False, 200),
        ("/v1/tenant", True, 200),
        ("/schema", False, 200),
        ("/v1/tenant", False, 401),
        ("/no/such/path", False, 404),
    ],
)
def test_every_response_carries_a_request_id(
    running: Running, path: str, with_key: bool, status: int
) -> None:
    headers = running.auth() if with_key else {}
    generated = running.client.get(path, headers=headers)
    assert generated.status_code == status
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,64}", generated.headers.get("x-request-id", ""))

    echoed = running.client.get(path, headers={**headers, "X-Request-Id": "abc-123"})
    assert echoed.status_code == status
    assert echoed.headers["x-request-id"] == "abc-123"


def test_each_request_gets_its_own_generated_id(running: Running) -> None:
    ids = {running.client.get("/health/live").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_an_unsafe_request_id_is_replaced(running: Running) -> None:
    response = running.client.get("/health/live", headers={"X-Request-Id": "evil id\twith spaces"})
    assert response.headers["x-request-id"] != "evil id\twith spaces"
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,64}", response.headers["x-request-id"])


def test_logs_are_json_lines_with_the_request_id_and_never_the_key(running: Running) -> None:
    ok = running.client.get("/v1/tenant", headers={**running.auth(), "X-Request-Id": "log-ok-1"})
    refused = running.client.get(
        "/v1/tenant", headers={"Authorization": "Bearer bk_wrong", "X-Request-Id": "log-401-1"}
    )
    assert (ok.status_code, refused.status_code) == (200, 401)

    def access_lines() -> dict[str, dict[str, Any]]:
        return {
            line["request_id"]: line
            for line in running.server.log_lines()
            if line.get("event") == "request" and line.get("request_id") in {"log-ok-1", "log-401-1"}
        }

    wait_for(lambda: len(access_lines()) == 2, 5, "the access log lines")
    lines = access_lines()
    assert lines["log-ok-1"]["status"] == 200
    assert lines["log-ok-1"]["path"] == "/v1/tenant"
    assert lines["log-ok-1"]["tenant_id"] == running.dev.tenant_id
    assert lines["log-401-1"]["status"] == 401
    assert running.dev.admin_key not in running.server.stderr
    assert running.dev.admin_key[3:] not in running.server.stderr


def test_a_worker_runs_beside_the_server_and_stops_on_sigterm(running: Running) -> None:
    worker = Process(running.data_dir, "worker", "worker")
    try:
        wait_for(lambda: "scheduler_started" in worker.stderr or worker.popen.poll() is not None, 30, "start")
        assert worker.popen.poll() is None, worker.stderr
        assert worker.terminate() == 0, worker.stderr
        assert "Traceback" not in worker.stderr
    finally:
        worker.kill()


# --- stop and start again -------------------------------------------------------------------


def test_sigterm_stops_the_server_and_a_restart_reuses_the_dev_tenant(tmp_path: Path) -> None:
    dev = make_run_setup(tmp_path)
    auth = {"Authorization": f"Bearer {dev.admin_key}"}

    first = Server(tmp_path, "serve-1")
    try:
        first.wait_ready()
        with first.client() as client:
            assert client.get("/v1/tenant", headers=auth).status_code == 200
        assert exited_cleanly_or_by_sigterm(first.terminate()), first.stderr
        assert "Traceback" not in first.stderr
    finally:
        first.kill()

    again = make_run_setup(tmp_path)  # `make run` a second time
    assert again == dev

    second = Server(tmp_path, "serve-2")
    try:
        second.wait_ready()
        with second.client() as client:
            response = client.get("/v1/tenant", headers=auth)
        assert response.status_code == 200
        assert response.json()["id"] == dev.tenant_id
        assert tenant_count(tmp_path) == 1
    finally:
        second.kill()


# --- refusing to start ----------------------------------------------------------------------


def test_production_refuses_to_serve_without_a_secret_key(tmp_path: Path) -> None:
    server = Process(
        tmp_path, "serve-production", "serve", "--port", str(free_port()), BILLING_ENV="production"
    )
    try:
        returncode = server.popen.wait(timeout=20)
    finally:
        server.kill()
    assert returncode != 0
    assert "BILLING_SECRET_KEY" in server.stderr
    assert "Traceback" not in server.stderr
    assert not (tmp_path / "secret_key").exists()
