"""A real browser for the tests: headless Chromium from Debian's `chromium` package, driven by Playwright.

Playwright's own browser download cannot run here, so it launches /usr/bin/chromium. When that is
missing it is installed with apt-get (as root; .ci/run installs it up front too); a machine that
cannot is a skip, and under CI=true a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.databases import IN_CI

CHROMIUM = "/usr/bin/chromium"


def install_chromium() -> str | None:
    """apt-get install chromium (refreshing the package lists once if needed); None or why not."""
    if shutil.which("apt-get") is None:
        return "chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is not installed and installing it needs root: apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not Path(CHROMIUM).exists():
        return f"apt-get install chromium failed: {(result.stderr or result.stdout).strip()[-500:]}"
    return None


def require_chromium() -> str:
    """The chromium binary, installed when missing; a skip locally, a failure under CI=true, if impossible."""
    if not Path(CHROMIUM).exists():
        problem = install_chromium()
        if problem is not None:
            if IN_CI:
                pytest.fail(f"CI=true and {problem}")
            pytest.skip(problem)
    return CHROMIUM


def launch_chromium(playwright, **options):
    """Debian's chromium, headless, through Playwright (root needs --no-sandbox: no user namespace for it)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(
        executable_path=require_chromium(), headless=True, args=[*args, *options.pop("args", [])], **options
    )


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # requirements-dev.txt installs it
        if IN_CI:
            pytest.fail("CI=true and Playwright is not installed (pip install -r requirements-dev.txt)")
        pytest.skip("Playwright is not installed")
    require_chromium()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()
