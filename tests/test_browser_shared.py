"""One connection shared by a browser's tabs, in a real headless Chromium:
three pages of one origin on one URL make one stream request; every page
gets every event; closing the tab that holds the connection hands it to
another with no gap and no duplicate.
"""

from __future__ import annotations

import threading
import time
import typing as t
import uuid

import pytest
from conftest import Server
from playwright.sync_api import Browser
from playwright.sync_api import Page
from test_browser import browser  # noqa: F401 - the module's Chromium
from test_browser import received

from flask_eventstream.testing import check_delivery
from flask_eventstream.wire import Event

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server() -> t.Iterator[Server]:
    srv = Server("gevent", config={"RETRY": 300}).start()
    yield srv
    srv.stop()


def tabs(browser: Browser, server: Server, mode: str, channel: str) -> list[Page]:  # noqa: F811
    """Three pages in one browser context: one origin, one set of locks."""
    context = browser.new_context()
    pages = []
    for _ in range(3):
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{server.url}/page/{mode}?url=/stream/{channel}")
        page.wait_for_function("window.opened >= 1")
        pages.append(page)
    return pages


def events_of(page: Page) -> list[Event]:
    return [Event(e["data"], id=e["id"]) for e in received(page)]


@pytest.mark.parametrize("mode", ["shared", "shared-fallback"])
def test_tabs_share_one_stream_and_hand_it_over_without_gap(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
) -> None:
    channel = f"tabs-{uuid.uuid4().hex[:6]}"
    pages = tabs(browser, server, mode, channel)
    server.wait_for(lambda s: s["channels"].get(channel) == 1)
    first = server.publish(channel, "{n}", count=20)
    for page in pages:
        page.wait_for_function("window.received.length >= 20")
        assert [e["id"] for e in received(page)] == first
    # Still one stream: the other tabs never connected.
    assert server.stats()["channels"][channel] == 1
    (leader,) = [p for p in pages if p.evaluate("window.source._inner !== null")]
    rest = [p for p in pages if p is not leader]
    published = list(first)

    def publish() -> None:
        for n in range(100):
            published.extend(server.publish(channel, f"late {n}"))
            time.sleep(0.005)

    publisher = threading.Thread(target=publish)
    publisher.start()
    # Mid-publish: the handover happens while events come.
    leader.wait_for_function("window.received.length >= 30")
    leader.close()
    publisher.join(30)
    for page in rest:
        page.wait_for_function(f"window.received.length >= {len(published)}")
        check_delivery(published, events_of(page))  # no gap, no duplicate
    server.wait_for(lambda s: s["channels"].get(channel) == 1)
    (second,) = [p for p in rest if p.evaluate("window.source._inner !== null")]
    (last,) = [p for p in rest if p is not second]
    # close() in the tab that holds the connection: that tab stops, the
    # other takes over, after the last id it saw.
    second.evaluate("window.source.close()")
    kept = len(received(second))
    assert second.evaluate("window.source.readyState") == 2
    more = server.publish(channel, "after close {n}", count=5)
    published += more
    last.wait_for_function(f"window.received.length >= {len(published)}")
    check_delivery(published, events_of(last))
    assert len(received(second)) == kept
    assert last.evaluate("window.source.readyState") == 1
    last.context.close()


def test_without_shared_each_tab_has_its_own_stream(
    browser: Browser,  # noqa: F811
    server: Server,
) -> None:
    channel = f"tabs-{uuid.uuid4().hex[:6]}"
    pages = tabs(browser, server, "auto", channel)
    server.wait_for(lambda s: s["channels"].get(channel) == 3)
    pages[0].context.close()
