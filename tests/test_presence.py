"""Presence: ``events.presence(channel)`` counts every open stream and lists
the members ``identify`` names, across 3 gunicorn gevent workers on Redis
(1 on memory); ``eventstream-join`` and ``-leave`` come once per member, not
per tab; a SIGKILLed worker's members are gone within two heartbeats.
"""

from __future__ import annotations

import json
import os
import signal
import time
import typing as t
import uuid

import httpx
import pytest
from clients import RawStream
from conftest import on_backend
from conftest import RedisServer
from conftest import Server
from flask import Flask

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import stream

# Workers renew their presence every half heartbeat and are taken for dead
# after one and a half: with 2 cores shared with Chromium, a gevent worker is
# sometimes late by most of a second, so not 0.5 s as elsewhere.
HEARTBEAT = 2.0
NAMESPACES = {"room.": {"presence": True}}


#: The settings of every presence test's server.
PRESENCE = {"NAMESPACES": NAMESPACES, "HEARTBEAT": HEARTBEAT, "POLL_TIMEOUT": 2}


def make_server(redis: RedisServer, workers: int) -> Server:
    """A server of ``workers`` on Redis, under a prefix of its own."""
    prefix = f"pr{uuid.uuid4().hex[:6]}:"
    config = {**PRESENCE, "BACKEND": redis.url, "REDIS_PREFIX": prefix}
    return Server(config=config, workers=workers).start()


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> t.Iterator[Server]:
    workers = 3 if request.param == "redis" else 1
    srv = Server(config=on_backend(request, PRESENCE), workers=workers).start()
    yield srv
    srv.stop()


def presence(server: Server, channel: str) -> dict[str, t.Any]:
    answer = httpx.get(f"{server.url}/presence/{channel}", timeout=5)
    answer.raise_for_status()
    return t.cast(dict[str, t.Any], answer.json())


def wait_presence(
    server: Server,
    channel: str,
    count: int,
    members: dict[str, int],
    timeout: float = 5,
) -> float:
    """Wait until the channel's presence is this; return how long it took."""
    started = time.monotonic()
    expected = {"count": count, "members": members}
    while (found := presence(server, channel)) != expected:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"presence is {found}, not {expected}")
        time.sleep(0.05)
    return time.monotonic() - started


def tab(server: Server, channel: str, user: str | None) -> RawStream:
    """An open stream, as one browser tab of ``user`` holds."""
    query = f"?user={user}" if user else ""
    stream = RawStream(server.url, f"/stream/{channel}{query}", timeout=10)
    stream.open()
    return stream


def members_said(events: list[Event]) -> list[tuple[str, str]]:
    return [
        (e.event.removeprefix("eventstream-"), json.loads(e.data)["member"])
        for e in events
        if e.event in ("eventstream-join", "eventstream-leave")
    ]


def test_counts_members_tabs_and_anonymous_joins_once_per_member(
    server: Server,
) -> None:
    room = f"room.{uuid.uuid4().hex[:6]}"
    watcher = tab(server, room, None)
    alice = [tab(server, room, "alice") for _ in range(3)]
    bob = tab(server, room, "bob")
    wait_presence(server, room, 5, {"alice": 3, "bob": 1})
    # Each member joined once, however many tabs it opened.
    said = members_said(watcher.events(2))
    assert sorted(said) == [("join", "alice"), ("join", "bob")]
    for open_tab in alice[:2]:
        open_tab.close()
    wait_presence(server, room, 3, {"alice": 1, "bob": 1})
    alice[2].close()
    wait_presence(server, room, 2, {"bob": 1})
    bob.close()
    wait_presence(server, room, 1, {})
    (event,) = watcher.events(1)
    (mark,) = server.publish(room, "mark")
    rest = watcher.events(2)
    watcher.close()
    # alice left after her last tab, bob after his: nothing else came between.
    assert members_said([event, *rest]) == [("leave", "alice"), ("leave", "bob")]
    assert rest[-1].id == mark


def test_a_reconnect_is_neither_a_leave_nor_a_join(server: Server) -> None:
    room = f"room.{uuid.uuid4().hex[:6]}"
    watcher = tab(server, room, None)
    frank = tab(server, room, "frank")
    assert members_said(watcher.events(1)) == [("join", "frank")]
    for _ in range(3):  # each time to any worker, as a browser reconnects
        frank.close()
        frank = tab(server, room, "frank")
    (mark,) = server.publish(room, "mark")
    (event,) = watcher.events(1)
    assert event.id == mark
    frank.close()
    assert members_said(watcher.events(1)) == [("leave", "frank")]
    watcher.close()


def test_no_join_events_outside_a_presence_namespace(server: Server) -> None:
    lobby = f"lobby{uuid.uuid4().hex[:6]}"
    watcher = tab(server, lobby, None)
    dave = tab(server, lobby, "dave")
    wait_presence(server, lobby, 2, {"dave": 1})
    (mark,) = server.publish(lobby, "mark")
    (first,) = watcher.events(1)
    assert first.id == mark  # no eventstream-join before it
    dave.close()
    watcher.close()


def test_a_poll_counts_for_one_poll_timeout(server: Server) -> None:
    room = f"room.{uuid.uuid4().hex[:6]}"
    url = f"{server.url}/stream/{room}"
    # Polling again keeps one presence (in one worker: with several, each
    # poll may go to another, where it counts until its own lease ends).
    for _ in range(2 if server.workers == 1 else 1):
        answer = httpx.get(
            url, params={"transport": "poll", "user": "carol"}, timeout=5
        )
        assert answer.status_code == 200
    wait_presence(server, room, 1, {"carol": 1})
    # Gone a poll timeout (2 s) later, within a renewal.
    wait_presence(server, room, 0, {}, timeout=2 + 2 * HEARTBEAT + 1)


def test_identify_failing_is_anonymous_and_counted(server: Server) -> None:
    room = f"room.{uuid.uuid4().hex[:6]}"
    stream = tab(server, room, "broken-identify")
    wait_presence(server, room, 1, {})
    stream.close()
    assert "The identify function failed" in server.output()


def test_presence_checks_the_channel() -> None:
    app = Flask(__name__)
    events = EventStream(app)
    with app.app_context(), pytest.raises(ValueError, match="Invalid channel"):
        events.presence("no spaces")


def test_a_returned_name_that_is_not_a_short_str_is_anonymous() -> None:
    app = Flask(__name__)
    app.testing = True
    events = EventStream(app)
    names: list[t.Any] = [42, "", "x" * 201]

    @events.identify
    def identify() -> t.Any:
        return names.pop()

    @app.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("room")

    with app.app_context():
        for _ in range(3):
            events.subscribe("room").close()
            assert events.stats()["counters"]["callback_errors"] >= 0
    client = app.test_client()
    for _ in range(3):
        names.append(42)
        assert client.get("/s?transport=poll").status_code == 200
    with app.app_context():
        assert events.stats()["counters"]["callback_errors"] == 3


def test_a_sigkilled_worker_s_members_leave_within_two_heartbeats(
    redis_server: RedisServer,
) -> None:
    srv = make_server(redis_server, 3)
    room = f"room.{uuid.uuid4().hex[:6]}"
    try:
        victim = tab(srv, room, "erin")
        pid = int(victim.headers["x-worker-pid"])
        # A watcher on another worker, which survives the kill.
        watchers = []
        while True:
            watcher = tab(srv, room, None)
            if int(watcher.headers["x-worker-pid"]) != pid:
                break
            watchers.append(watcher)
        wait_presence(srv, room, 2 + len(watchers), {"erin": 1})
        for other in watchers:
            other.close()
        os.kill(pid, signal.SIGKILL)
        victim.close()
        took = wait_presence(srv, room, 1, {}, timeout=10)
        assert took < 2 * HEARTBEAT + 0.5, took  # slack for the read itself
        # And the surviving worker told its client, once.
        assert members_said(watcher.events(1)) == [("leave", "erin")]
        watcher.close()
    finally:
        srv.stop()
