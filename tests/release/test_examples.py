"""Every example in ``examples/`` works in a real browser, served by gunicorn.

The dashboard and progress tests also take the screenshots the docs show
(``docs/_static/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

import httpx
import pytest
from browsers import CHROMIUM_ARGS
from conftest import require
from conftest import ROOT
from conftest import Server
from playwright.sync_api import Browser
from playwright.sync_api import Page
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.browser

EXAMPLES = ROOT / "examples"
# The docs' screenshots are refreshed only when asked (a test run leaves the
# working tree as it found it): EVENTSTREAM_SCREENSHOTS=1 bash scripts/test.
SCREENSHOTS = (
    ROOT / "docs" / "_static"
    if os.environ.get("EVENTSTREAM_SCREENSHOTS")
    else Path(tempfile.mkdtemp(prefix="screenshots-"))
)


def example(name: str, env: dict[str, str] | None = None, workers: int = 1) -> Server:
    # Ready once one worker answers: the examples do not name their workers.
    server = Server(
        "gevent",
        app="app:app",
        extra=["--chdir", str(EXAMPLES / name), "-w", str(workers)],
        health="/",
    )
    server.env.update(env or {})
    return server.start()


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def new_page(browser: Browser, url: str) -> Page:
    """Open ``url`` in a context of its own (its own cookies: a user each)."""
    context = browser.new_context(viewport={"width": 800, "height": 420})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(url)
    return page


@pytest.mark.slow
def test_dashboard_draws_points_as_they_arrive(browser: Browser) -> None:
    server = example("dashboard", {"DASHBOARD_INTERVAL": "0.2"})
    try:
        first = new_page(browser, server.url + "/")
        first.wait_for_selector("#status:text-is('live')")
        first.wait_for_function("window.received >= 10")
        # A page opened later starts with the points so far, then goes on
        # from there: its ids never repeat and have no gap.
        second = new_page(browser, server.url + "/")
        second.wait_for_function("window.received >= 3")
        ids = second.evaluate("points.map((p) => p.id)")
        assert len(ids) >= 13
        assert len(set(ids)) == len(ids)
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")[:2])))
        shared = set(ids) & set(first.evaluate("points.map((p) => p.id)"))
        assert len(shared) >= 10
        # Every point drawn (at most 60), whichever arrived last: one read
        # of both in the page, waited for, not two reads with a point between.
        second.wait_for_function(
            "document.getElementById('load-line').getAttribute('points')"
            ".split(' ').length === Math.min(points.length, 60)"
        )
        second.screenshot(path=str(SCREENSHOTS / "dashboard.png"))
        first.context.close()
        second.context.close()
        # And from a terminal: flask eventstream tail on the running example.
        tail = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "eventstream", "tail",
             "--url", server.url + "/metrics", "--json", "--count", "3"],
            cwd=EXAMPLES / "dashboard", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert tail.returncode == 0, tail.stderr
        samples = [json.loads(line) for line in tail.stdout.splitlines()]
        assert [s["event"] for s in samples] == ["sample"] * 3
        assert all(0 <= json.loads(s["data"])["memory"] <= 100 for s in samples)
    finally:
        server.stop()


def test_progress_bar_follows_the_job(browser: Browser) -> None:
    server = example("progress", {"PROGRESS_STEP_SECONDS": "0.1"})
    try:
        page = new_page(browser, server.url + "/")
        page.click("#start")
        page.wait_for_function("window.steps.length >= 10")
        page.screenshot(path=str(SCREENSHOTS / "progress.png"))
        page.wait_for_function("window.finished === true")
        # Every step once and in order, though the job began before the
        # page subscribed.
        assert page.evaluate("window.steps") == list(range(1, 21))
        assert page.text_content("#label") is not None
        assert "finished" in (page.text_content("#label") or "")
        width = page.evaluate("document.getElementById('fill').style.width")
        assert width == "100%"
        page.context.close()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.redis
def test_chat_room_across_four_workers(browser: Browser, redis_server: t.Any) -> None:
    prefix = "chat-test:"
    server = example(
        "chat",
        {"FLASK_EVENTSTREAM_BACKEND": redis_server.url,
         "FLASK_EVENTSTREAM_REDIS_PREFIX": prefix,
         # A leave comes a heartbeat after the last stream: not 15 s here.
         "FLASK_EVENTSTREAM_HEARTBEAT": "2"},
        workers=4,
    )  # fmt: skip
    try:
        pages = []
        for n in range(3):
            page = new_page(browser, server.url + "/")
            page.fill("#name", f"user{n}")
            page.click("#join button")
            page.wait_for_function("document.body.dataset.live === 'yes'")
            pages.append(page)
        # Who is online: from presence() at load, then join events.
        everyone = ["user0", "user1", "user2"]
        for page in pages:
            page.wait_for_function(f"window.online().length === {len(everyone)}")
            assert page.evaluate("window.online()") == everyone
        said = []
        for n, page in enumerate(pages):
            for k in range(2):
                page.fill("#text", f"hello {k} <b>from</b> {n}")
                page.click("#form button")
                said.append(f"user{n}: hello {k} <b>from</b> {n}")
                page.wait_for_function(f"window.messages.length >= {len(said)}")
        for page in pages:
            page.wait_for_function(f"window.messages.length >= {len(said)}")
            # One order for everyone, each message once.
            assert page.evaluate("window.messages") == said
            # Shown as text, never as markup.
            assert page.locator("#log b").count() == len(said)
        # user2 leaves: the others see it go (a heartbeat after its stream).
        pages[2].context.close()
        for page in pages[:2]:
            page.wait_for_function("window.online().length === 2")
            assert page.evaluate("window.online()") == everyone[:2]
            assert page.locator("#online li").all_inner_texts() == everyone[:2]
        for page in pages[:2]:
            page.context.close()
    finally:
        server.stop()


def test_widget_on_another_origin_follows_with_a_token(browser: Browser) -> None:
    server = Server(
        "gevent",
        app="app:app",
        extra=["--chdir", str(EXAMPLES / "widget"), "-w", "1"],
        health="/",
    )
    server.env["FLASK_WIDGET_ORIGIN"] = f"http://localhost:{server.port}"
    server.env["FLASK_WIDGET_STREAMS"] = server.url
    server.start()
    try:
        page = new_page(browser, f"http://localhost:{server.port}/partner")
        page.wait_for_function("document.body.dataset.live === 'yes'")
        shop = new_page(browser, server.url + "/")
        for status in ("packed", "shipped"):
            shop.select_option("#status", status)
            shop.click("button")
        page.wait_for_function("window.statuses.length >= 2")
        assert page.evaluate("window.statuses") == ["packed", "shipped"]
        assert page.text_content("#status") == "shipped"
        # A tampered token: refused, and the page can read why.
        failure = page.evaluate(
            """(url) => new Promise((resolve) => {
                 const source = new EventStreamClient(url);
                 source.onerror = (e) => resolve({status: e.status,
                                                  message: e.message});
               })""",
            f"{server.url}/events/order.42?token=eventstream-1.abc.def",
        )
        assert failure["status"] == 403
        assert "signature does not match" in failure["message"]
        # No token, no stream: the app has no authorize function.
        bare = httpx.get(f"{server.url}/events/order.42?transport=poll", timeout=5)
        assert bare.status_code == 403
        page.context.close()
        shop.context.close()
    finally:
        server.stop()


def test_notifications_reach_only_their_user(browser: Browser) -> None:
    server = example("notifications")
    try:
        pages = {}
        for user in ("alice", "bob"):
            page = new_page(browser, server.url + "/")
            page.fill("input[name=name]", user)
            page.click("#login")
            page.wait_for_function("document.body.dataset.live === 'yes'")
            pages[user] = page
        alice, bob = pages["alice"], pages["bob"]
        alice.fill("#to", "bob")
        alice.fill("#text", "lunch?")
        alice.click("button")
        bob.wait_for_function("window.inbox.length >= 1")
        assert bob.evaluate("window.inbox") == [{"from": "alice", "text": "lunch?"}]
        bob.fill("#to", "alice")
        bob.fill("#text", "yes")
        bob.click("button")
        alice.wait_for_function("window.inbox.length >= 1")
        assert alice.evaluate("window.inbox") == [{"from": "bob", "text": "yes"}]
        assert bob.evaluate("window.inbox.length") == 1
        # Alice's session cannot follow Bob's channel, on any transport.
        for transport in ("eventsource", "poll", "longpoll"):
            status = alice.evaluate(
                "async (url) => (await fetch(url)).status",
                f"/events/user.bob?transport={transport}",
            )
            assert status == 403, transport
        for page in pages.values():
            page.context.close()
    finally:
        server.stop()
