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
from urllib.parse import quote

import pytest
from browsers import browser  # noqa: F401 - the module's Chromium
from browsers import received
from conftest import serve
from conftest import Server
from playwright.sync_api import Browser
from playwright.sync_api import BrowserContext
from playwright.sync_api import Page
from playwright.sync_api import Route

from flask_eventstream.testing import check_delivery
from flask_eventstream.wire import Event

pytestmark = pytest.mark.browser


server = serve(config={"RETRY": 0.3})


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


# -- tabs of different sessions: an app with accounts (tests/sharedapp.py) ------


@pytest.fixture(scope="module", params=["cookies", "identify"])
def accounts(request: pytest.FixtureRequest) -> t.Iterator[Server]:
    """The app with logins: scoped by its cookies, or by ``identify``."""
    srv = Server("gevent", app="sharedapp:app", config={"RETRY": 0.3})
    if request.param == "identify":
        srv.env["TEST_IDENTIFY"] = "1"
    srv.start()
    yield srv
    srv.stop()


def post(page: Page, path: str, **form: str) -> None:
    """A form post from the page: its cookies change as a real login's do."""
    page.evaluate(
        "([path, form]) => fetch(path, {method: 'POST',"
        " body: new URLSearchParams(form)})"
        ".then((r) => { if (!r.ok) throw new Error(r.status); })",
        [path, form],
    )


def tab(context: BrowserContext, server: Server, url: str, opened: bool = True) -> Page:
    """A shared client's page; waits for its open (or its first error)."""
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{server.url}/page/shared?url={quote(url)}")
    page.wait_for_function("window.opened >= 1" if opened else "window.errors >= 1")
    return page


def leaders(pages: list[Page]) -> list[Page]:
    return [p for p in pages if p.evaluate("window.source._inner !== null")]


def datas(page: Page) -> list[str]:
    return [e["data"] for e in received(page)]


def test_a_tab_of_another_session_never_joins_its_connection(
    browser: Browser,  # noqa: F811
    accounts: Server,
) -> None:
    context = browser.new_context()
    desk = context.new_page()
    desk.goto(accounts.url + "/health")
    post(desk, "/login", user="alice")
    # Two tabs of one login share one stream, though Flask signs the session
    # cookie again on every request.
    alice = [tab(context, accounts, "/me/events") for _ in range(2)]
    accounts.wait_for(lambda s: s["channels"].get("user.alice") == 1)
    accounts.publish("user.alice", "alice-1")
    for page in alice:
        page.wait_for_function("window.received.length >= 1")
    assert len(leaders(alice)) == 1
    assert accounts.stats()["channels"]["user.alice"] == 1
    # alice logs out (her open stream goes on: the app does not close it)
    # and bob logs in: his tab has a connection of its own.
    post(desk, "/logout")
    post(desk, "/login", user="bob")
    bob = tab(context, accounts, "/me/events")
    accounts.wait_for(lambda s: s["channels"].get("user.bob") == 1)
    accounts.publish("user.alice", "alice-private-after-logout")
    accounts.publish("user.bob", "bob-own")
    bob.wait_for_function("window.received.length >= 1")
    for page in alice:
        page.wait_for_function("window.received.length >= 2")
        assert datas(page) == ["alice-1", "alice-private-after-logout"]
    assert datas(bob) == ["bob-own"]
    assert bob.evaluate("window.source._inner !== null")
    context.close()


@pytest.mark.parametrize("ending", ["403", "204"])
def test_a_refused_leader_tells_every_tab_and_frees_the_lock(
    browser: Browser,  # noqa: F811
    accounts: Server,
    ending: str,
) -> None:
    """Logout with the docs' advice (close_channel): the reconnection is
    refused (403, or 204 from a view that says "no more"); every tab gets
    the error with its status, and the next tab connects and is told.
    """
    url = "/me/events" if ending == "403" else "/me/events?anonymous=204"
    context = browser.new_context()
    desk = context.new_page()
    desk.goto(accounts.url + "/health")
    post(desk, "/login", user="carol")
    carol = [tab(context, accounts, url) for _ in range(2)]
    accounts.wait_for(lambda s: s["channels"].get("user.carol") == 1)
    post(desk, "/logout", close="1")
    final = f"window.failures.some((f) => f.status === {ending} && f.state === 2)"
    for page in carol:
        page.wait_for_function(final)
        assert page.evaluate("window.source.readyState") == 2
    # A tab opened now cannot connect: it is told why.
    late = tab(context, accounts, url, opened=False)
    late.wait_for_function(final)
    # The lock is free: the next login's tab connects.
    post(desk, "/login", user="dave")
    dave = tab(context, accounts, url)
    accounts.wait_for(lambda s: s["channels"].get("user.dave") == 1)
    accounts.publish("user.dave", "dave-own")
    dave.wait_for_function("window.received.length >= 1")
    assert datas(dave) == ["dave-own"]
    context.close()


def test_a_new_login_moves_the_open_tabs_to_its_own_connection(
    browser: Browser,  # noqa: F811
    accounts: Server,
) -> None:
    """erin logs out and frank logs in before erin's stream is closed: the
    reconnection is frank's, so erin's tabs leave her scope for his, with
    no event of his reaching them under hers and none of hers after.
    """
    context = browser.new_context()
    desk = context.new_page()
    desk.goto(accounts.url + "/health")
    post(desk, "/login", user="erin")
    erin = [tab(context, accounts, "/me/events") for _ in range(2)]
    accounts.wait_for(lambda s: s["channels"].get("user.erin") == 1)
    scope = erin[0].evaluate("window.source._scope")
    post(desk, "/logout")
    post(desk, "/login", user="frank")
    post(desk, "/close", channel="user.erin")
    accounts.wait_for(
        lambda s: (
            s["channels"].get("user.frank") == 1 and not s["channels"].get("user.erin")
        )
    )
    frank = tab(context, accounts, "/me/events")
    accounts.publish("user.erin", "erin-private-after-logout")
    accounts.publish("user.frank", "frank-own")
    for page in [*erin, frank]:
        page.wait_for_function("window.received.length >= 1")
        assert datas(page) == ["frank-own"]
        assert page.evaluate("window.source._scope") != scope
    assert len(leaders([*erin, frank])) == 1
    assert accounts.stats()["channels"]["user.frank"] == 1
    context.close()


# -- errors and handovers on one account (tests/serverapp.py) -------------------


@pytest.mark.parametrize("mode", ["shared", "shared-fallback"])
@pytest.mark.parametrize(
    ("path", "status"), [("/stream/secret-x", 403), ("/nowhere", 404)]
)
def test_a_refusal_reaches_shared_tabs_with_its_status(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
    path: str,
    status: int,
) -> None:
    context = browser.new_context()
    pages = []
    for _ in range(2):
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{server.url}/page/{mode}?url={path}")
        pages.append(page)
    for page in pages:
        page.wait_for_function("window.errors >= 1")
        (failure,) = page.evaluate("window.failures")
        assert failure["status"] == status
        assert failure["state"] == 2
        assert failure["message"]
    context.close()


@pytest.mark.parametrize("mode", ["shared", "shared-fallback"])
def test_a_handover_before_the_first_event_loses_nothing(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
) -> None:
    """The leader closes before any event; an event is published while the
    next leader's first request is on its way: the next leader resumes
    from the id the first one was given, so every tab gets the event.
    """
    channel = f"tabs-{uuid.uuid4().hex[:6]}"
    pages = tabs(browser, server, mode, channel)
    server.wait_for(lambda s: s["channels"].get(channel) == 1)
    (leader,) = leaders(pages)
    rest = [p for p in pages if p is not leader]
    for page in rest:  # every tab knows where the stream is
        page.wait_for_function("window.source.lastEventId !== ''")
    held: list[Route] = []
    published: list[str] = []

    def hold(route: Route) -> None:
        if published:
            route.continue_()
        else:
            held.append(route)

    for page in rest:
        page.route(f"**/stream/{channel}*", hold)
    context = leader.context
    with context.expect_event("request", lambda r: f"/stream/{channel}" in r.url):
        leader.close()
    published += server.publish(channel, "during the handover")
    rest[0].evaluate("0")  # lets the held request reach the handler
    for route in held:
        route.continue_()
    for page in rest:
        page.wait_for_function("window.received.length >= 1")
        assert [e["id"] for e in received(page)] == published
    # A follower that closes stops alone.
    (second,) = leaders(rest)
    (follower,) = [p for p in rest if p is not second]
    follower.evaluate("window.source.close()")
    more = server.publish(channel, "after {n}", count=3)
    second.wait_for_function("window.received.length >= 4")
    assert [e["id"] for e in received(second)] == published + more
    assert len(received(follower)) == 1
    # One connection left. A long-poll is between two requests now and then
    # (then 0): sampled, never 2, and 1 at some point.
    counts = []
    for _ in range(20):
        counts.append(server.stats()["channels"].get(channel, 0))
        if mode == "shared" or 1 in counts and len(counts) >= 10:
            break
    assert max(counts) == 1 and (mode != "shared" or counts == [1]), counts
    context.close()


@pytest.mark.parametrize("mode", ["shared", "shared-fallback"])
def test_a_tab_that_joins_later_gets_its_rewind(
    browser: Browser,  # noqa: F811
    server: Server,
    mode: str,
) -> None:
    """``?rewind=3``: every tab gets the last three events, not only the one
    whose connection fetched them.
    """
    channel = f"tabs-{uuid.uuid4().hex[:6]}"
    stored = server.publish(channel, "stored {n}", count=5)
    context = browser.new_context()
    pages = []
    for _ in range(2):
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(
            f"{server.url}/page/{mode}?url={quote(f'/stream/{channel}?rewind=3')}"
        )
        page.wait_for_function("window.received.length >= 3")
        pages.append(page)
    server.wait_for(lambda s: s["channels"].get(channel) == 1)
    live = server.publish(channel, "live {n}", count=2)
    for page in pages:
        page.wait_for_function("window.received.length >= 5")
        assert [e["id"] for e in received(page)] == stored[2:] + live
    context.close()


@pytest.fixture
def small_polls() -> t.Iterator[Server]:
    """Polls that answer two events at most: catching up takes pages."""
    with Server("gevent", config={"RETRY": 0.3, "POLL_BATCH": 2}) as srv:
        yield srv


def test_a_frozen_leader_hands_over_and_catches_up_when_it_resumes(
    browser: Browser,  # noqa: F811
    small_polls: Server,
) -> None:
    """A frozen tab (or one kept in the back-forward cache) runs no code:
    it lets go of the connection when the browser says so (``freeze``,
    ``pagehide``), and on ``resume`` gets what it missed, page by page.
    """
    server = small_polls
    channel = f"tabs-{uuid.uuid4().hex[:6]}"
    pages = tabs(browser, server, "shared", channel)
    server.wait_for(lambda s: s["channels"].get(channel) == 1)
    (leader,) = leaders(pages)
    rest = [p for p in pages if p is not leader]
    first = server.publish(channel, "first {n}", count=2)
    leader.wait_for_function("window.received.length >= 2")
    leader.evaluate("document.dispatchEvent(new Event('freeze'))")
    # It let go: whatever comes now is fetched by the next leader.
    assert leader.evaluate("window.source._release === null && !window.source._bus")
    while_frozen = server.publish(channel, "while frozen {n}", count=7)
    for page in rest:
        page.wait_for_function("window.received.length >= 9")
    assert len(leaders(rest)) == 1
    leader.evaluate("document.dispatchEvent(new Event('resume'))")
    after = server.publish(channel, "after {n}", count=2)
    for page in pages:
        page.wait_for_function("window.received.length >= 11")
        assert [e["id"] for e in received(page)] == first + while_frozen + after
    assert server.stats()["channels"][channel] == 1
    leader.context.close()
