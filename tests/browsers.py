"""A real headless Chromium for the browser tests: Debian's ``chromium``,
driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import typing as t

import pytest
from conftest import require
from playwright.sync_api import Browser
from playwright.sync_api import Page
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    executable = require("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    page.wait_for_function("window.opened >= 1")
    return page


def received(page: Page) -> list[dict[str, str]]:
    return t.cast(list[dict[str, str]], page.evaluate("window.received"))
