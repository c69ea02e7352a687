"""A real headless browser for tests: Debian's `chromium` package, driven by Playwright for Python.

Playwright's own browser download is not used (`make browser` installs the Debian package; the
Playwright package is pinned in requirements-dev.txt). Without either, a test that needs the
browser is skipped locally and fails under CI=true (tests/servers.py `require`).

    from tests.browser import browser  # noqa: F401 (a fixture)

    def test_page(browser):
        context = browser.new_context(ignore_https_errors=True)
"""

from __future__ import annotations

import os

import pytest

from tests.servers import require

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Root (CI, containers) cannot use Chromium's sandbox, and /dev/shm is small in containers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def launch_chromium(playwright):
    """A headless Chromium of `playwright` (a sync_playwright() handle), from the Debian package."""
    executable = require(CHROMIUM, f"Chromium ({CHROMIUM}: make browser, or apt-get install chromium)")
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium, shared by a module's tests."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(None, "Playwright for Python (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
