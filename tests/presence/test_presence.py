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
    with Server(config=on_backend(request, PRESENCE), workers=workers) as srv:
        yield srv


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


@pytest.mark.slow
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
    names: list[t.Any] = []

    @events.identify
    def identify() -> t.Any:
        return names.pop()

    @app.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("room")

    client = app.test_client()
    for n, name in enumerate([42, "", "x" * 201, None], start=1):
        names.append(name)
        assert client.get("/s?transport=poll").status_code == 200
        assert not names  # identify ran, in the request
        with app.app_context():
            errors = events.stats()["counters"]["callback_errors"]
            present = events.presence("room")
        # Each bad name is an error, counted; None is anonymous, no error.
        assert errors == min(n, 3), name
        assert present["members"] == {}, name


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


#: Channel names that mimic the parts of the library's own Redis keys.
LIBRARY_NAMES = [
    "worker",
    "workers",
    "channel",
    "presence",
    "stream",
    "once",
    "control",
    "epoch",
    "last-id",
]


def test_channels_named_like_library_keys_leave_every_room_alone(
    redis_server: RedisServer,
) -> None:
    """A subscriber on ``worker`` or ``workers`` (or any name that mimics a
    key of the library's) changes no other channel's presence, and a worker
    SIGKILLed with one leaves ``presence()`` answering.
    """
    srv = make_server(redis_server, 3)
    rooms = [f"room.{uuid.uuid4().hex[:6]}" for _ in range(4)]
    try:
        tabs = [tab(srv, room, f"u{n}") for n, room in enumerate(rooms)]
        odd = [tab(srv, name, f"odd-{name}") for name in LIBRARY_NAMES]
        for n, room in enumerate(rooms):
            wait_presence(srv, room, 1, {f"u{n}": 1})
        for name in LIBRARY_NAMES:
            wait_presence(srv, name, 1, {f"odd-{name}": 1})
        # Kill the worker of the "workers" subscriber; its tab goes with it.
        victim = odd[LIBRARY_NAMES.index("workers")]
        pid = int(victim.headers["x-worker-pid"])
        os.kill(pid, signal.SIGKILL)
        for name, stream_ in zip(LIBRARY_NAMES, odd, strict=True):
            if int(stream_.headers["x-worker-pid"]) == pid:
                wait_presence(srv, name, 0, {}, timeout=10)
            else:
                wait_presence(srv, name, 1, {f"odd-{name}": 1})
        for n, (room, stream_) in enumerate(zip(rooms, tabs, strict=True)):
            if int(stream_.headers["x-worker-pid"]) == pid:
                wait_presence(srv, room, 0, {}, timeout=10)
            else:
                wait_presence(srv, room, 1, {f"u{n}": 1})
        for stream_ in tabs + odd:
            stream_.close()
    finally:
        srv.stop()


def test_presence_scripts_check_before_they_write(redis_server: RedisServer) -> None:
    """Every channel name, those of library keys included, has keys of its
    own; every presence key expires; a script that cannot apply (a key of
    another type under the prefix, written by another program) fails
    before its first write.
    """
    from flask_eventstream.backends.redis import RedisBackend
    from flask_eventstream.errors import BackendUnavailable

    prefix = f"keys-{uuid.uuid4().hex[:6]}:"
    backend = RedisBackend(redis_server.url, 10, prefix=prefix)
    redis = redis_server.client()
    try:
        assert backend.presence_tick("w1", 5) == (True, [])
        for name in ["room.a", *LIBRARY_NAMES, "w1"]:
            assert backend.presence_set("w1", name, {"m:x": 1}, False) == [
                ("join", "m:x")
            ]
        for name in ["room.a", *LIBRARY_NAMES, "w1"]:
            assert backend.presence_read(name) == {"m:x": 1}
        keys = list(redis.scan_iter(match=f"{prefix}*"))
        assert keys and all(redis.pttl(key) > 0 for key in keys), [
            (key, redis.pttl(key)) for key in keys
        ]
        # Another program's key where a channel's totals go.
        redis.set(f"{prefix}presence/channel/room.b", "not a hash")
        before = {key: redis.dump(key) for key in redis.scan_iter(match=f"{prefix}*")}
        with pytest.raises(BackendUnavailable, match="holds a string"):
            backend.presence_set("w1", "room.b", {"m:y": 1}, False)
        after = {key: redis.dump(key) for key in redis.scan_iter(match=f"{prefix}*")}
        assert after == before
        # A dead worker's entries in that channel: reaping fails whole too.
        redis.delete(f"{prefix}presence/channel/room.b")
        # A lease long enough to write under load, then waited out (a lease
        # is time itself: there is no event to wait on).
        leased = time.monotonic()
        assert backend.presence_tick("w2", 0.3) == (True, [])
        joined = backend.presence_set("w2", "room.b", {"m:y": 1}, False)
        assert joined == [("join", "m:y")], "written while w2 was alive"
        redis.set(f"{prefix}presence/channel/room.b", "not a hash")
        time.sleep(max(0.0, leased + 0.35 - time.monotonic()))  # w2 is dead
        before = {key: redis.dump(key) for key in redis.scan_iter(match=f"{prefix}*")}
        with pytest.raises(BackendUnavailable, match="holds a string"):
            backend.presence_tick("w1", 5)
        after = {key: redis.dump(key) for key in redis.scan_iter(match=f"{prefix}*")}
        assert after == before
    finally:
        backend.close()


def presence_keys(redis: RedisServer, prefix: str) -> list[bytes]:
    return list(redis.client().scan_iter(match=f"{prefix}presence*", count=1000))


def test_anonymous_polls_outside_presence_namespaces_write_no_presence(
    redis_server: RedisServer,
) -> None:
    """Polls and long-polls of anonymous clients on channels without
    presence write nothing (the attack: many polls over new channel names);
    a named member's poll, or one on a presence channel, writes keys that
    all expire.
    """
    srv = make_server(redis_server, 1)
    prefix = srv.env["FLASK_EVENTSTREAM_REDIS_PREFIX"].strip('"')
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            for n in range(20):
                names = ",".join(f"new{n}x{k}" for k in range(32))
                for transport in ("poll", "longpoll"):
                    answer = client.get(
                        f"/stream/{names}",
                        params={"transport": transport, "timeout": "0"},
                    )
                    assert answer.status_code == 200, answer.text
            # Processed by the worker's presence thread: wait for its flush
            # through a change that is counted, then look.
            client.get(
                f"/stream/lobby{prefix[2:8]}",
                params={"transport": "poll", "user": "ann"},
            )
            wait_presence(srv, f"lobby{prefix[2:8]}", 1, {"ann": 1})
            client.get(f"/stream/room.{prefix[2:8]}", params={"transport": "poll"})
            wait_presence(srv, f"room.{prefix[2:8]}", 1, {})
        keys = presence_keys(redis_server, prefix)
        assert not [k for k in keys if b"new" in k], keys
        redis = redis_server.client()
        assert keys and all(redis.pttl(key) > 0 for key in keys), [
            (key, redis.pttl(key)) for key in keys
        ]
    finally:
        srv.stop()


def test_a_worker_s_presence_leases_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its cap a worker counts no more poll leases (and says so once):
    polls over ever new channel names cannot grow its memory.
    """
    from flask_eventstream import presence as presence_module

    monkeypatch.setattr(presence_module, "MAX_LEASES", 10)
    app = Flask(__name__)
    app.config["EVENTSTREAM_NAMESPACES"] = NAMESPACES
    events = EventStream(app)

    @app.get("/s/<channel>")
    @stream
    def s(channel: str) -> t.Any:
        return events.subscribe(channel)

    client = app.test_client()
    # An anonymous poll outside a presence namespace is not counted at all:
    # polled while the cap has room (past it, no poll would be counted).
    assert client.get("/s/lobby?transport=poll").status_code == 200
    for n in range(15):
        assert client.get(f"/s/room.{n}?transport=poll").status_code == 200
    deadline = time.monotonic() + 5  # the presence thread sends them
    with app.app_context():
        while events.presence("room.9")["count"] == 0:
            assert time.monotonic() < deadline, "room.9 was never counted"
            time.sleep(0.01)
        counted = [events.presence(f"room.{n}")["count"] for n in range(15)]
        assert events.presence("lobby")["count"] == 0
    assert counted == [1] * 10 + [0] * 5


def test_presence_counts_at_once_with_a_heartbeat_longer_than_the_uptime() -> None:
    """``time.monotonic()`` counts from the boot: with a heartbeat more than
    twice the host's uptime, a worker's presence still renews at its first
    round (it skipped it, then spun: thousands of Redis commands a second,
    and a count that stayed 0).
    """
    redis = RedisServer().start()  # its own: its commands are counted
    heartbeat = 4 * time.monotonic() + 60  # the workers' clock too
    prefix = f"up{uuid.uuid4().hex[:6]}:"
    config = {**PRESENCE, "HEARTBEAT": heartbeat, "BACKEND": redis.url}
    srv = Server(config={**config, "REDIS_PREFIX": prefix}, workers=1).start()
    client = redis.client()
    stream = None
    try:
        stream = tab(srv, "room.up", None)
        wait_presence(srv, "room.up", 1, {})
        before = int(client.info("stats")["total_commands_processed"])
        time.sleep(1)
        done = int(client.info("stats")["total_commands_processed"]) - before
        assert done < 50, f"{done} Redis commands in a second, with one stream"
    finally:
        if stream is not None:
            stream.close()
        client.close()
        srv.stop()
        redis.stop()
