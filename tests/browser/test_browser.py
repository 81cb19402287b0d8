"""A real headless Chromium receives the same events on every transport."""

from __future__ import annotations

import json

import pytest
from browsers import browser as browser  # the module's Chromium (a fixture)
from browsers import open_page
from browsers import received
from clients import Proxy
from conftest import serve
from conftest import Server
from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


server = serve(config={"RETRY": 0.3})


def test_every_mode_receives_the_same_500_events(
    browser: Browser, server: Server
) -> None:
    modes = ["native", "auto", "fallback", "poll"]
    pages = {
        mode: open_page(browser, f"{server.url}/page/{mode}?url=/events/browser")
        for mode in modes
    }
    assert pages["fallback"].evaluate("window.source.transport") == "longpoll"
    assert pages["auto"].evaluate("window.source.transport") == "eventsource"
    expected = []
    for batch in range(50):
        kind = "tick" if batch % 2 else None
        data = f"batch {batch}\nline \u00e9\u2603 {{n}}"
        for n, id in enumerate(server.publish("browser", data, count=10, event=kind)):
            expected.append(
                {
                    "id": id,
                    "type": kind or "message",
                    "data": data.replace("{n}", str(n)),
                }
            )
    for mode, page in pages.items():
        page.wait_for_function("window.received.length >= 500")
        assert received(page) == expected, mode
        if mode != "native":  # EventSource keeps it private; our client shows it
            last = page.evaluate("window.source.lastEventId")
            assert last == expected[-1]["id"], mode
        page.close()


@pytest.mark.parametrize("mode", ["native", "auto", "fallback"])
def test_page_survives_a_dropped_connection(
    browser: Browser, server: Server, mode: str
) -> None:
    proxy = Proxy(server.port)
    channel = f"drop-{mode}"
    try:
        page = open_page(browser, f"{proxy.url}/page/{mode}?url=/events/{channel}")
        first = server.publish(channel, "before{n}", count=3)
        page.wait_for_function("window.received.length >= 3")
        # Cut while a request is in flight: a long-poll client sends its next
        # one at once, and a kept-alive connection cut between two requests
        # is retried by the browser unseen (no error, no second open).
        server.wait_for(lambda stats: stats["channels"].get(channel, 0) >= 1)
        assert proxy.cut() >= 1
        # Published while the page has no connection: replayed on reconnect.
        during = server.publish(channel, "during{n}", count=3)
        page.wait_for_function("window.opened >= 2")
        after = server.publish(channel, "after{n}", count=3)
        page.wait_for_function("window.received.length >= 9")
        assert [e["id"] for e in received(page)] == first + during + after
        assert page.evaluate("window.errors") >= 1
        page.close()
    finally:
        proxy.close()


def test_close_stops_requests(browser: Browser, server: Server) -> None:
    page = open_page(browser, f"{server.url}/page/poll?url=/events/closing")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    state = page.evaluate("window.source.close(); window.source.readyState")
    assert state == 2
    server.publish("closing", "after close")
    page.wait_for_timeout(1000)  # three poll intervals: any request would show
    assert [url for url in requests if "/events/closing" in url] == []
    assert received(page) == []
    page.close()


def test_module_import(browser: Browser, server: Server) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/health")
    kind = page.evaluate(
        """async () => {
            const m = await import("/events/static/eventstream.mjs");
            return [typeof m.EventStreamClient, m.default === m.EventStreamClient];
        }"""
    )
    assert kind == ["function", True]
    page.close()


@pytest.mark.parametrize("mode", ["native", "auto", "longpoll", "poll"])
def test_204_stops_reconnecting(browser: Browser, server: Server, mode: str) -> None:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server.url}/page/{mode}?url=/gone")
    page.wait_for_function("window.source.readyState === 2 && window.errors >= 1")

    def asked() -> list[str]:
        return [url for url in requests if url.split("?")[0].endswith("/gone")]

    before = asked()
    page.wait_for_timeout(1000)  # over three retry intervals: a retry would show
    assert asked() == before
    # EventStreamClient over a native EventSource asks once more, to learn
    # the status EventSource hides (and tell it in its error event).
    assert len(before) == (2 if mode == "auto" else 1)
    assert page.evaluate("window.opened") == 0
    if mode != "native":
        assert page.evaluate("window.failures[0].status") == 204
    page.close()


@pytest.mark.parametrize("mode", ["auto", "longpoll"])
@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/stream/secret-room", 403, "Not allowed to subscribe to 'secret-room'."),
        ("/nowhere", 404, "The requested URL was not found on the server."),
        ("/broken", 500, "The server encountered an internal error"),
    ],
)
def test_the_client_s_error_says_the_status_and_the_reason(
    browser: Browser, server: Server, mode: str, path: str, status: int, message: str
) -> None:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{server.url}/page/{mode}?url={path}")
    page.wait_for_function("window.failures.length >= 1")
    failure = page.evaluate("window.failures[0]")
    assert failure["status"] == status
    assert failure["message"].startswith(message), failure
    if status < 500:
        assert failure["state"] == 2  # a refusal is final, as in EventSource
    page.close()


def test_a_cursor_from_another_server_resets_and_the_stream_goes_on(
    browser: Browser, server: Server
) -> None:
    """A native ``EventSource`` that comes back with an id this server cannot
    read (another SSE server had the URL) gets an ``eventstream-reset`` and
    live events: a 400 would have ended it for good.
    """
    page = open_page(browser, f"{server.url}/page/native?url=/foreign/moved")
    page.wait_for_function(
        "window.received.some((e) => e.type === 'eventstream-reset')"
    )
    (live,) = server.publish("moved", "live")
    page.wait_for_function("window.received.length >= 3")
    got = received(page)
    page.close()
    assert got[0] == {"id": "from another server", "type": "message", "data": "old"}
    assert got[1]["type"] == "eventstream-reset"
    assert json.loads(got[1]["data"])["reason"] == "malformed"
    assert got[2] == {"id": live, "type": "message", "data": "live"}
