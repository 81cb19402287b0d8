"""Presence in a real headless Chromium: pages (tabs) of two members join a
room on 3 gunicorn gevent workers on Redis; a watching page hears each
member join once and leave once, after its last tab closes.
"""

from __future__ import annotations

import json
import typing as t
import uuid

import pytest
from browsers import browser  # noqa: F401 - the module's Chromium
from browsers import open_page
from conftest import RedisServer
from conftest import Server
from playwright.sync_api import Browser
from playwright.sync_api import Page
from test_presence import make_server
from test_presence import wait_presence

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> t.Iterator[Server]:
    srv = make_server(redis_server, 3)
    yield srv
    srv.stop()


def said(page: Page) -> list[tuple[str, str]]:
    return [
        (e["type"].removeprefix("eventstream-"), json.loads(e["data"])["member"])
        for e in page.evaluate("window.received")
        if e["type"] in ("eventstream-join", "eventstream-leave")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["native", "fallback"])
def test_tabs_join_and_leave_once_per_member(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
) -> None:
    room = f"room.{uuid.uuid4().hex[:6]}"

    def page_of(user: str) -> Page:
        return open_page(
            browser, f"{server.url}/page/{mode}?url=/stream/{room}%3Fuser={user}"
        )

    watcher = page_of("watcher")
    tabs = [page_of("alice"), page_of("alice"), page_of("bob")]
    if mode == "native":
        # Long-polls of one member in one worker count once: counts are
        # checked on streams, joins and leaves on both.
        wait_presence(server, room, 4, {"watcher": 1, "alice": 2, "bob": 1})
    # Its own join too: a stream is on the bus before it counts.
    watcher.wait_for_function("window.received.length >= 3")
    joins = [("join", "alice"), ("join", "bob"), ("join", "watcher")]
    assert sorted(said(watcher)) == joins, server.output()
    tabs[0].close()  # one of alice's two tabs: she is still here
    if mode == "native":
        wait_presence(server, room, 3, {"watcher": 1, "alice": 1, "bob": 1})
    tabs[1].close()
    tabs[2].close()
    watcher.wait_for_function("window.received.length >= 5")
    assert sorted(said(watcher)[3:]) == [("leave", "alice"), ("leave", "bob")]
    assert len(said(watcher)) == 5
    watcher.close()
