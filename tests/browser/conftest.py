"""Browser tests: Playwright drives Debian's Chromium against a real ``billing serve`` that holds
the demo tenant of ``billing demo``.

SQLite is enough here: these tests prove what a person sees and does in the finance pages, and
the database-specific behaviour behind them is proved on both dialects by the integration tests.
Chromium is ``/usr/bin/chromium`` (``make test`` installs it with apt); Playwright's own browser
download is never used. ``BILLING_SKIP_BROWSER=1`` skips the suite visibly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    sync_playwright,
)

from billing.demo.roster import MIN_CUSTOMERS
from tests.conftest import TEST_SECRET_KEY
from tests.e2e.test_serve import Process, Server, free_port, run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parents[2]
# Every invoice status and story is there with the smallest roster; the default 36 take longer.
DEMO_CUSTOMERS = MIN_CUSTOMERS
DEMO_DEADLINE_SECONDS = 120
BANNER = {
    "tenant_id": re.compile(r"tenant: +(ten_\S+)"),
    "admin_key": re.compile(r"admin key: +(bk_\S+)"),
    "finance_key": re.compile(r"finance key: +(bk_\S+)"),
}


def artifacts_dir() -> Path:
    return Path(os.environ.get("BILLING_TEST_ARTIFACTS") or REPO / "test-artifacts")


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """Debian's Chromium, checked before anything is built for it."""
    if os.environ.get("BILLING_SKIP_BROWSER") == "1":
        pytest.skip("browser tests skipped: BILLING_SKIP_BROWSER=1")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
            "(apt-get install --no-install-recommends chromium), or set BILLING_SKIP_BROWSER=1",
            pytrace=False,
        )
    return CHROMIUM


@dataclass
class DemoServer:
    base_url: str
    tenant_id: str
    admin_key: str
    finance_key: str

    def api(self) -> httpx.Client:
        """The API as the demo tenant's admin."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10
        )


@pytest.fixture(scope="package")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``billing migrate``, ``billing demo``, and ``billing serve`` without the scheduler, so that
    nothing changes the demo data behind the tests' back. The server starts while the demo is
    being built (it gets no request before), with a secret key of its own so that neither
    process generates one under the other's feet."""
    data_dir = tmp_path_factory.mktemp("browser")
    port = free_port()
    env = {"BILLING_SECRET_KEY": TEST_SECRET_KEY}
    run_cli(data_dir, "migrate", **env)
    builder = Process(
        data_dir, "demo", "demo", "--customers", str(DEMO_CUSTOMERS), "--port", str(port), **env
    )
    server = Server(data_dir, port=port, BILLING_SCHEDULER="off", **env)
    try:
        assert builder.popen.wait(timeout=DEMO_DEADLINE_SECONDS) == 0, builder.stderr
        demo = DemoServer(f"http://127.0.0.1:{port}", **_banner(builder.stdout_path.read_text()))
        server.wait_ready()
        yield demo
    finally:
        builder.kill()
        server.kill()


def _banner(text: str) -> dict[str, str]:
    """The tenant id and keys that ``billing demo`` prints."""
    found = {name: pattern.search(text) for name, pattern in BANNER.items()}
    assert all(found.values()), f"unexpected `billing demo` output:\n{text}"
    return {name: match.group(1) for name, match in found.items() if match is not None}


@pytest.fixture(scope="package")
def api(demo_server: DemoServer) -> Iterator[httpx.Client]:
    with demo_server.api() as client:
        yield client


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright, chromium: str) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


# Chromium asks every site for its icon; the pages have none, and that 404 is not a flow's error.
IGNORED_SOURCES = ("/favicon.ico",)


@dataclass
class Watch:
    """What a page did that no flow should: console errors and requests to other hosts."""

    allowed_errors: list[re.Pattern[str]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def allow_error(self, pattern: str) -> None:
        """A console error the flow expects (a refused form logs its 403)."""
        self.allowed_errors.append(re.compile(pattern))

    def on_console(self, message: ConsoleMessage) -> None:
        source = message.location.get("url", "")
        if message.type == "error" and not source.endswith(IGNORED_SOURCES):
            self.console_errors.append(f"{message.text} ({source})")

    def on_page_error(self, error: Any) -> None:
        self.console_errors.append(f"uncaught: {error}")

    def on_request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname != "127.0.0.1":
            self.foreign_requests.append(request.url)

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.console_errors if not any(p.search(e) for p in self.allowed_errors)]


@pytest.fixture
def watch() -> Watch:
    return Watch()


def _open_context(browser: Browser, demo_server: DemoServer, watch: Watch, **options: Any) -> BrowserContext:
    context = browser.new_context(
        base_url=demo_server.base_url, viewport={"width": 1280, "height": 900}, **options
    )
    context.set_default_timeout(10_000)
    context.on("request", watch.on_request)
    context.on("console", watch.on_console)
    context.on("weberror", lambda error: watch.on_page_error(error.error))
    return context


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser_context(**options): options of the test's Playwright browser context"
    )


@pytest.fixture
def context(
    request: pytest.FixtureRequest, browser: Browser, demo_server: DemoServer, watch: Watch
) -> Iterator[BrowserContext]:
    """A fresh browser profile per test (no cookies); checks what the page did afterwards."""
    marker = request.node.get_closest_marker("browser_context")
    opened = _open_context(browser, demo_server, watch, **(marker.kwargs if marker else {}))
    yield opened
    opened.close()
    assert watch.foreign_requests == [], "requests left 127.0.0.1"
    assert watch.unexpected_errors() == [], "console errors"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(request: pytest.FixtureRequest, context: BrowserContext, shots: Screenshots) -> Iterator[Page]:
    """The test's page; a failed test leaves a screenshot of where it stopped."""
    opened = context.new_page()
    yield opened
    if request.node.stash.get(FAILED, False):
        shots.take(opened, "failed")


class Screenshots:
    """Full-page PNGs named ``<test>-<step>.png`` in the artefacts' ``screenshots/`` folder."""

    def __init__(self, folder: Path, test_name: str) -> None:
        self.folder = folder
        self.prefix = re.sub(r"[^A-Za-z0-9_.]+", "-", test_name.removeprefix("test_")).strip("-")

    def take(self, page: Page, step: str) -> Path:
        path = self.folder / f"{self.prefix}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="session")
def screenshot_folder() -> Path:
    """Emptied once per run, so that every PNG in it comes from this run."""
    folder = artifacts_dir() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


@pytest.fixture
def shots(request: pytest.FixtureRequest, screenshot_folder: Path) -> Screenshots:
    return Screenshots(screenshot_folder, request.node.name)
