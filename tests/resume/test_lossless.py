"""Lossless or loud, against real servers: under each fault, every client
gets every event once, in order, or an ``eventstream-reset`` first; checked
with :func:`flask_eventstream.testing.check_delivery`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
from clients import Follower
from clients import RawStream
from conftest import on_backend
from conftest import redis_config
from conftest import RedisServer
from conftest import run_app
from conftest import Server

from flask_eventstream import Event
from flask_eventstream.backends.redis.scripts import APPEND_SCRIPT
from flask_eventstream.backends.redis.scripts import READ_SCRIPT
from flask_eventstream.testing import check_delivery
from flask_eventstream.testing import parse

RESET = "eventstream-reset"


def publish_elsewhere(server: Server, channel: str, count: int) -> list[str]:
    code = f"for n in range({count}):\n"
    code += f"    print(events.publish({channel!r}, f'e{{n}}').id)"
    return run_app(server, code)


def resets(events: list[Event]) -> list[dict[str, t.Any]]:
    return [json.loads(e.data) for e in events if e.event == RESET]


def resume(server: Server, channel: str, cursor: str) -> list[tuple[str, str]]:
    """Resume ``channel`` after ``cursor``: the opening's events, as
    ``(type, reset reason or data)``.
    """
    stream = RawStream(server.url, f"/stream/{channel}", {"Last-Event-ID": cursor})
    try:
        got = stream.open(cursor)
    finally:
        stream.close()
    return [
        (
            e.event or "message",
            json.loads(e.data)["reason"] if e.event == RESET else e.data,
        )
        for e in got
    ]


def is_end(event: Event) -> bool:
    return event.data == "end"


def wait_for_reset(follower: Follower, timeout: float = 20) -> None:
    """Wait until ``follower`` got a reset: what is published after it must
    reach it (a reset forgives what came before it).
    """
    deadline = time.monotonic() + timeout
    while not resets(follower.received):
        assert follower.error is None, follower.error
        assert time.monotonic() < deadline, follower.received[-3:]
        time.sleep(0.05)


def test_a_worker_that_lags_past_the_trimmed_history_is_loud(
    redis_server: RedisServer,
) -> None:
    """The worker's event loop stops (SIGSTOP: as a blocking request, a
    partition or its reconnect back-off would) while another process
    publishes five times the history, and Redis drops the worker's pub/sub
    connection (as it does when a client's buffer passes
    ``client-output-buffer-limit``): its client must not jump silently.
    """
    server = Server(config=redis_config(redis_server, HISTORY=100)).start()
    try:
        follower = Follower(server.url, "/stream/lag", 0, until=is_end)
        assert follower.ready.wait(20)
        (pid,) = set(follower.pids)
        first = server.publish("lag", "before")
        os.kill(int(pid), signal.SIGSTOP)
        try:
            ids = publish_elsewhere(server, "lag", 500)
            assert redis_server.client().client_kill_filter(_type="pubsub") >= 1
        finally:
            os.kill(int(pid), signal.SIGCONT)
        wait_for_reset(follower)
        end = server.publish("lag", "end")
        got = follower.wait(30)
        check_delivery(first + ids + end, got)
        assert [r["reason"] for r in resets(got)] == ["expired"]
        assert server.stats()["counters"]["gaps"] >= 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("count", "dropped"),
    [(500, False), (50, True)],
    ids=["buffered-by-redis", "read-from-history"],
)
def test_a_worker_that_lags_within_what_redis_keeps_loses_nothing(
    redis_server: RedisServer, count: int, dropped: bool
) -> None:
    """As above, but what the stopped worker missed is still kept: in its
    pub/sub buffer (more than the history holds), or, when Redis dropped
    the connection, in the history. Its client gets every event, no reset.
    """
    server = Server(config=redis_config(redis_server, HISTORY=100)).start()
    try:
        follower = Follower(server.url, "/stream/buffered", 0, until=is_end)
        assert follower.ready.wait(20)
        (pid,) = set(follower.pids)
        first = server.publish("buffered", "before")
        os.kill(int(pid), signal.SIGSTOP)
        try:
            ids = publish_elsewhere(server, "buffered", count)
            if dropped:
                assert redis_server.client().client_kill_filter(_type="pubsub") >= 1
        finally:
            os.kill(int(pid), signal.SIGCONT)
        end = server.publish("buffered", "end")
        got = follower.wait(30)
        assert [e.id for e in got] == first + ids + end
    finally:
        server.stop()


def test_a_revocation_missed_while_lagging_ends_every_stream() -> None:
    # A Redis of its own: the test drops every listener connection on it.
    redis = RedisServer().start()
    server = Server(config=redis_config(redis)).start()
    stream = RawStream(server.url, "/stream/room")
    try:
        stream.open()
        pid = stream.headers["x-worker-pid"]
        os.kill(int(pid), signal.SIGSTOP)
        try:
            # The revocation, then enough others to trim it from the control
            # stream before the worker reads it.
            run_app(
                server,
                "events.close_channel('room')\n"
                "for n in range(300):\n    events.close_channel(f'other{n}')",
            )
            # And the connection that Redis kept them on for the stopped
            # worker is lost: the worker reads the control stream again, from
            # where it was, and finds the revocation trimmed.
            with contextlib.closing(redis.client()) as client:
                assert client.client_kill_filter(_type="pubsub") >= 1
        finally:
            os.kill(int(pid), signal.SIGCONT)
        stream.read_to_end(timeout=10)  # ended: its client is authorized again
        server.wait_ended("room", "control")
    finally:
        stream.close()
        server.stop()
        redis.stop()


def test_a_cursor_into_a_flushed_store_gets_a_reset(redis_server: RedisServer) -> None:
    server = Server(config=redis_config(redis_server)).start()
    try:
        (cursor,) = server.publish("flushed", "seen")
        server.publish("flushed", "missed")
        redis_server.client().flushall()
        server.publish("flushed", "after")  # makes the old cursor look valid
        assert resume(server, "flushed", cursor) == [(RESET, "epoch")]
    finally:
        server.stop()


def test_a_cursor_into_expired_history_gets_a_reset(redis_server: RedisServer) -> None:
    config = redis_config(redis_server, HISTORY_TTL=0.5)
    server = Server(config=config).start()
    try:
        (cursor,) = server.publish("quiet", "seen")
        server.publish("quiet", "missed")
        key = f"{config['REDIS_PREFIX']}stream:quiet"
        deadline = time.monotonic() + 10
        while redis_server.client().exists(key):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.6)  # the next event comes more than the TTL later
        server.publish("quiet", "after")
        assert resume(server, "quiet", cursor) == [(RESET, "expired")]
    finally:
        server.stop()


def test_ids_that_go_backwards_in_an_emptied_store_reach_live_clients(
    redis_server: RedisServer,
) -> None:
    """The store is emptied and its new ids are below the old ones (a Redis
    restarted without persistence on a clock behind): live clients are
    told, and get what follows, instead of waiting for the clock.
    """
    config = redis_config(redis_server)
    config["REDIS_IDLE_CHECK"] = 0.5  # the listener finds the store emptied
    server = Server(config=config).start()
    try:
        # Ids an hour ahead: what the old store had, on a faster clock.
        ahead = int(time.time() * 1000) + 3_600_000
        redis_server.client().set(f"{config['REDIS_PREFIX']}last-id", f"{ahead}-0")
        follower = Follower(server.url, "/stream/clock", 0, until=is_end)
        assert follower.ready.wait(20)
        before = server.publish("clock", "e{n}", count=3)
        redis_server.client().flushall()
        wait_for_reset(follower)
        after = publish_elsewhere(server, "clock", 5) + server.publish("clock", "end")
        got = follower.wait(30)
        check_delivery(before + after, got)
        assert [r["reason"] for r in resets(got)] == ["epoch"]
        assert [e.id for e in got if e.event != RESET] == before + after
    finally:
        server.stop()


def test_a_cursor_from_another_memory_process_gets_a_reset() -> None:
    first = Server().start()
    try:
        (cursor,) = first.publish("m", "old process")
    finally:
        first.stop()
    second = Server().start()
    try:
        second.publish("m", "new process", count=3)
        assert resume(second, "m", cursor) == [(RESET, "epoch")]
    finally:
        second.stop()


def test_a_channel_forgotten_by_the_memory_backend_resets_old_cursors() -> None:
    server = Server(config={"HISTORY_CHANNELS": 2}).start()
    try:
        (cursor,) = server.publish("a", "seen")
        server.publish("a", "missed")
        server.publish("b", "x")
        server.publish("c", "x")  # "a" is forgotten
        server.publish("a", "again")
        assert resume(server, "a", cursor) == [(RESET, "expired")]
    finally:
        server.stop()


@pytest.mark.parametrize("guests", ["", "raise-on-connect"])
def test_a_failed_opening_never_leaks_a_connection_slot(
    redis_server: RedisServer, guests: str
) -> None:
    server = Server(config=redis_config(redis_server, MAX_CONNECTIONS=5))
    server.env["TEST_GUESTS"] = guests
    server.start()
    try:
        server.publish("slot", "x")
        for cursor in ["1-99999999999999999999", "18446744073709551616-0-x"] * 6:
            stream = RawStream(server.url, "/stream/slot", {"Last-Event-ID": cursor})
            got = stream.open()
            stream.close()
            assert stream.status == 200
            assert [json.loads(e.data)["reason"] for e in got] == ["malformed"]
            # More requests than slots: each one's slot comes back.
            server.wait_for(lambda s: s["connections"] == 0)
        stream = RawStream(server.url, "/stream/slot")
        stream.open()
        assert stream.status == 200
        stream.close()
    finally:
        server.stop()


def test_a_poll_reads_no_more_than_it_answers() -> None:
    redis = RedisServer().start()  # its own: the slow log is server-wide
    server = Server(config=redis_config(redis, HISTORY=5000, POLL_BATCH=10)).start()
    try:
        (cursor,) = server.publish("big", "first")
        server.publish("big", "y" * 1000 + "{n}", count=2000)
        client = redis.client()
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        answer = server.http.get(
            "/stream/big",
            params={"transport": "poll", "lastEventId": cursor},
            timeout=10,
        ).json()
        assert len(answer["events"]) == 10
        reads = [
            [part.decode() for part in entry["command"].split(b" ")]
            for entry in client.slowlog_get(128)
            if entry["command"].upper().startswith(b"XRANGE")
        ]
        assert reads, "the poll read nothing"
        for read in reads:
            assert read[-2:] == ["COUNT", "10"], read
    finally:
        server.stop()
        redis.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, t.Any]:
    return on_backend(request)


@pytest.mark.parametrize("view", ["/stream/", "/iterate/"])
def test_a_revocation_during_a_slow_authorize_is_not_missed(
    tmp_path: Path, backend: dict[str, t.Any], view: str
) -> None:
    """On both backends, for a returned and an iterated subscription; with
    Redis, on a worker whose listener had not started (the first stream).
    """
    bans = tmp_path / "bans"
    server = Server(config=backend)
    server.env["TEST_BANS_FILE"] = str(bans)
    server.start()
    try:
        # authorize reads the ban list (bob is allowed), then does I/O.
        stream = RawStream(server.url, f"{view}slowauth-room?user=bob")
        time.sleep(0.1)  # inside that I/O (0.5 s): a session can't be waited on
        server.http.post("/ban", data={"user": "bob"}, timeout=5)
        server.http.post("/close", data={"channel": "slowauth-room"}, timeout=5)
        server.publish("slowauth-room", "private-after-revoke")
        stream.read_head()
        assert stream.status == 200
        body = stream.read_to_end(timeout=5)  # ended: bob must authorize again
        stream.close()
        assert b"private-after-revoke" not in body
        server.wait_ended("slowauth-room", "revoked")
        again = RawStream(server.url, f"{view}slowauth-room?user=bob").read_head()
        assert again.status == 403
        again.close()
    finally:
        server.stop()


def test_gone_clients_free_their_slot_within_a_second() -> None:
    server = Server(config={"HEARTBEAT": 30, "MAX_CONNECTIONS": 100}).start()
    try:
        streams = [RawStream(server.url, "/stream/gone") for _ in range(100)]
        for stream in streams:
            stream.open()
        server.wait_for(lambda s: s["connections"] == 100)
        refused = RawStream(server.url, "/stream/gone").read_head()
        assert refused.status == 503
        refused.close()
        for stream in streams:
            stream.close()
        started = time.monotonic()
        server.wait_for(lambda s: s["connections"] == 0, timeout=5)
        print(f"100 gone clients noticed in {time.monotonic() - started:.2f}s")
        assert time.monotonic() - started < 2
        stream = RawStream(server.url, "/stream/gone")
        stream.open()
        assert stream.status == 200
        stream.close()
    finally:
        server.stop()


EPOLL_PROBE = """
from gevent import monkey
monkey.patch_all()
import os, socket
from flask_eventstream.departures import Departures

def epolls():
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += "eventpoll" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the listing's own descriptor
    return found

a, b = socket.socketpair()  # gevent's hub, and its own epoll, are made here
before = epolls()
departures = Departures()
departures.add("a stream", a)
print(epolls() - before)
"""


def test_the_hang_up_poll_is_epoll_under_gevent() -> None:
    """Monkey-patching removes ``select.epoll``: the poll for gone clients
    must still use it, or it costs a pass over every socket four times a
    second (at 10,000 streams, most of an idle worker's CPU).
    """
    done = subprocess.run(
        [sys.executable, "-c", EPOLL_PROBE], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 1  # the watcher's own epoll descriptor


def test_lagging_clients_under_load_stay_lossless_or_loud(
    redis_server: RedisServer,
) -> None:
    """Many clients on two workers, one worker stalled mid-burst: each client's
    log passes the delivery check.
    """
    server = Server(workers=2, config=redis_config(redis_server, HISTORY=200))
    server.extra = ["--reuse-port"]
    server.start()
    try:
        followers = [
            Follower(server.url, "/stream/burst", 0, until=is_end) for _ in range(20)
        ]
        for follower in followers:
            assert follower.ready.wait(20)
        pids = sorted({pid for f in followers for pid in f.pids})
        ids = publish_elsewhere(server, "burst", 100)
        os.kill(int(pids[0]), signal.SIGSTOP)
        stalled = threading.Timer(1.5, os.kill, (int(pids[0]), signal.SIGCONT))
        stalled.start()
        try:
            ids += publish_elsewhere(server, "burst", 1000)
        finally:
            stalled.join()
        # The stalled worker's clients get every event (Redis buffered its
        # pub/sub messages) or a reset; the others get every event.
        ids += server.publish("burst", "end")
        for follower in followers:
            check_delivery(ids, follower.wait(30))
    finally:
        server.stop()


def test_parse_is_what_the_checker_reads() -> None:
    # The checker takes what parse gives: a reset then a jump passes.
    got = parse(
        b"id: 1-0-a\ndata: e0\n\n"
        b"id: 5-0-a\nevent: eventstream-reset\ndata: {}\n\n"
        b"id: 6-0-a\ndata: e3\n\n"
    )
    check_delivery(["1-0-a", "2-0-a", "3-0-a", "6-0-a"], got)


def test_clients_that_join_a_channel_being_set_up_are_never_left_deaf() -> None:
    """The first subscription of a channel in a worker makes the listener
    subscribe to it, then reads the store's head: where the listener catches
    up from if its connection drops. Those that come meanwhile wait for
    Redis's confirmation. When that read fails (as it does when a crowd of
    reconnecting clients takes the pool), none of them may go live with no
    such point: the listener's connection then drops, events come before it
    is back, none comes after, and its clients would wait for ever, in
    silence. Each must get them, or its stream must end so that it resumes.

    A Redis of its own: it is paused while the subscriptions open (so they
    all wait for the confirmation), and refuses the head script from the
    moment they open until the events are out (the failed read, made certain).
    """
    redis = RedisServer().start()
    admin = redis.client()
    admin.execute_command(
        "ACL", "SETUSER", "worker", "on", ">lossless", "~*", "&*", "+@all"
    )
    config = redis_config(redis, REDIS_IDLE_CHECK=60)  # no check while paused
    config["BACKEND"] = redis.url.replace("redis://", "redis://worker:lossless@")
    server = Server(config=config).start()
    followers: list[Follower] = []
    try:
        warm = RawStream(server.url, "/stream/warm")
        warm.open()  # the listener and its control stream are set up
        warm.close()
        (first,) = server.publish("setup")
        # Appends and replays work; the head read (and presence's) does not.
        allowed = [f"+evalsha|{sha1(s)}" for s in (APPEND_SCRIPT, READ_SCRIPT)]
        admin.execute_command("ACL", "SETUSER", "worker", "-evalsha", *allowed)
        assert redis.proc is not None
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            path = f"/stream/setup?lastEventId={first}"
            followers = [Follower(server.url, path, 3, timeout=60) for _ in range(5)]
            server.wait_for(lambda stats: stats["channels"].get("setup") == 5)
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        server.wait_ended("setup", "unavailable")  # the head read failed
        for follower in followers:
            assert follower.ready.wait(20)  # past the replay, or unavailable
        (pid,) = {pid for follower in followers for pid in follower.pids}
        os.kill(int(pid), signal.SIGSTOP)
        try:
            assert admin.client_kill_filter(_type="pubsub") >= 1
            ids = publish_elsewhere(server, "setup", 3)
        finally:
            os.kill(int(pid), signal.SIGCONT)
        admin.execute_command("ACL", "SETUSER", "worker", "+evalsha")
        deadline = time.monotonic() + 20
        deaf = [f for f in followers if not f.done.wait(deadline - time.monotonic())]
        assert not deaf, f"{len(deaf)} of 5 clients got {[f.received for f in deaf]}"
        for follower in followers:
            check_delivery(ids, follower.wait(0))
    finally:
        server.stop()
        admin.close()
        redis.stop()


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
