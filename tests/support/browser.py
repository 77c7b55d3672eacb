"""A real headless Chromium (Debian's, through Playwright) for the tests of the console."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def chromium_page(width: int = 1280, height: int = 860) -> Iterator:
    """A fresh page in a browser of its own; closed on the way out."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Chromium not installed: run scripts/ensure_test_tools.sh (./test.sh does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def log_in(page, key: str) -> None:
    """What a person does: the console asks for a key; type it in and submit."""
    page.wait_for_selector("#login:not([hidden])", timeout=10_000)
    page.fill("#api-key", key)
    page.click("#login button")
