"""A page on another origin subscribes with a token, in a real headless
Chromium: admitted with a good one, refused with its reason (status and
message) with a tampered one, cut off when it expires.
"""

from __future__ import annotations

import json
import typing as t

import pytest
from browsers import browser  # noqa: F401 - the module's Chromium
from browsers import open_page
from browsers import received
from conftest import Server
from playwright.sync_api import Browser
from test_tokens import server_token

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server() -> t.Iterator[Server]:
    srv = Server("gevent", config={"RETRY": 0.3})
    # Pages come from http://localhost:port, streams from http://127.0.0.1:port:
    # two origins, as a page on another site and its stream would be.
    srv.env["FLASK_EVENTSTREAM_CORS_ORIGINS"] = json.dumps(
        [f"http://localhost:{srv.port}"]
    )
    srv.start()
    yield srv
    srv.stop()


def page_url(server: Server, mode: str, stream: str) -> str:
    return f"http://localhost:{server.port}/page/{mode}?url={server.url}{stream}"


@pytest.mark.parametrize("mode", ["native", "auto", "fallback"])
def test_a_page_on_another_origin_subscribes_with_a_token(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
) -> None:
    channel = f"secret-{mode}"  # authorize refuses it: only the token admits
    signed = server_token(server, channel)
    page = open_page(
        browser, page_url(server, mode, f"/events/{channel}?token={signed}")
    )
    ids = server.publish(channel, "{n}", count=3)
    page.wait_for_function(f"window.received.length >= {len(ids)}")
    assert [e["id"] for e in received(page)] == ids
    assert [e["data"] for e in received(page)] == ["0", "1", "2"]
    page.close()


def test_a_tampered_token_is_refused_with_its_reason(
    browser: Browser,  # noqa: F811
    server: Server,
) -> None:
    signed = server_token(server, "secret-t")
    # Not the last character: its low bits are padding, so changing it
    # may leave the signature's bytes as they were (the token still valid).
    bad = signed[:-2] + ("A" if signed[-2] != "A" else "B") + signed[-1]
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(page_url(server, "auto", f"/events/secret-t?token={bad}"))
    page.wait_for_function("window.failures.length >= 1")
    (failure,) = page.evaluate("window.failures")
    assert failure["status"] == 403
    assert "signature does not match" in failure["message"]
    assert failure["state"] == 2  # CLOSED: it does not retry a refusal
    page.close()


def test_a_page_s_stream_ends_when_its_token_expires(
    browser: Browser,  # noqa: F811
    server: Server,
) -> None:
    signed = server_token(server, "secret-x", expires_in=2)
    page = open_page(
        browser, page_url(server, "auto", f"/events/secret-x?token={signed}")
    )
    (sent,) = server.publish("secret-x", "before")
    page.wait_for_function("window.received.length >= 1")
    # At the expiry the stream ends; the reconnect is refused with the reason.
    page.wait_for_function("window.failures.some((f) => f.status === 403)")
    failure = page.evaluate("window.failures.find((f) => f.status === 403)")
    assert "The token expired" in failure["message"]
    assert [e["id"] for e in received(page)] == [sent]
    page.close()


@pytest.mark.parametrize("mode", ["token", "token-fallback"])
def test_get_token_renews_an_expired_token_without_a_gap(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
) -> None:
    channel = f"secret-renew-{mode}"  # only a token admits it
    page = open_page(browser, f"{server.url}/page/{mode}?url=/events/{channel}")
    sent = server.publish(channel, "{n}", count=3)
    page.wait_for_function("window.received.length >= 3")
    # Each token lasts 2 s: the stream ends, the next one is refused (403),
    # the client gets a new token and resumes after the last id it saw.
    for round in range(2):
        page.wait_for_function(f"window.opened >= {round + 2}", timeout=15_000)
        sent += server.publish(channel, "{n}", count=3)
        page.wait_for_function(f"window.received.length >= {len(sent)}")
    assert [e["id"] for e in received(page)] == sent
    refused = page.evaluate("window.failures.filter((f) => f.status === 403)")
    assert refused == []  # renewed quietly: the page is told of no refusal
    page.close()
