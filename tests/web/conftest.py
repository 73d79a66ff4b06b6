"""The console under a real browser: Debian's Chromium driven by Playwright (no browser download), against a
real server on 127.0.0.1 with two tenants' keys."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.api.conftest import Server, serve

CHROMIUM = os.environ.get("MINIMILL_CHROMIUM", "/usr/bin/chromium")
# Chromium's own background connections are refused on a closed network; these flags stop it making them.
QUIET = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ALICE, BOB = "alice-key", "bob-key"
# Screenshots of every page, kept as the run's artifacts (the README shows copies from docs/console/).
ARTIFACTS = Path(os.environ.get("MINIMILL_ARTIFACTS", "build/artifacts")) / "console"
# `expect` waits 5 s by default: on a loaded two-core CI machine a streamed answer or a swap can take longer. A
# wrong page still fails, only later.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A keyed server for the console tests (two tenants)."""
    yield from serve(tmp_path_factory.mktemp("console"), kv_size=4096, max_seqs=8, api_keys=[ALICE, BOB])


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium from Debian's package (`.ci/run` installs it)."""
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), \
        f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or set MINIMILL_CHROMIUM)"
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def open_page(browser: Browser, *, width: int = 1280, height: int = 800) -> Page:
    """A fresh tab in its own context (its own session storage)."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


def log_in(page: Page, server: Server, key: str, path: str = "/console/playground") -> None:
    """Open `path`, meet the login form, give `key`, and wait for the page itself."""
    page.goto(server.url + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.locator("main h1").filter(has_not_text="Log in").wait_for()


def visit(page: Page, server: Server, path: str) -> None:
    """Open `path` in a tab that has logged in: the server answers a bare page load with the login form, and the
    console asks again with the kept key; wait for that page."""
    page.goto(server.url + path)
    page.wait_for_function("() => !document.querySelector('#login') && document.readyState === 'complete'")
