"""The README's demo works in a real browser: publish from the form, see it."""

from __future__ import annotations

import typing as t

import pytest
from browsers import CHROMIUM_ARGS
from conftest import require
from conftest import ROOT
from conftest import Server
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo() -> t.Iterator[Server]:
    with Server(
        "gevent",
        app="app:app",
        extra=["--chdir", str(ROOT / "examples" / "demo")],
        health="/",
    ) as srv:
        yield srv


def test_demo_page_shows_what_the_form_publishes(demo: Server) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(demo.url + "/")
            page.wait_for_function(
                "document.getElementById('status').textContent === 'connected'"
            )
            for text in ["first note", "second note"]:
                page.fill("#text", text)
                page.click("button")
                # The page clears the field once its POST is answered: a
                # second note typed before that would be cleared with it.
                page.wait_for_function("document.getElementById('text').value === ''")
            page.wait_for_function("document.querySelectorAll('#log li').length === 2")
            items = page.eval_on_selector_all(
                "#log li", "items => items.map(li => li.firstChild.textContent)"
            )
            assert items == ["second note", "first note"]
        finally:
            browser.close()
