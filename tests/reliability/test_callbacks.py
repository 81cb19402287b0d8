"""User code is a guest: signal receivers never run under a library lock and
never stop a library thread, against a real gunicorn gevent server.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
from clients import RawStream
from conftest import RedisServer
from conftest import Server


@pytest.mark.timeout(60)
def test_a_receiver_that_publishes_when_a_slow_client_is_dropped() -> None:
    # The drop happens inside a publish: a receiver called there, under the
    # memory backend's lock, deadlocked every later publish.
    server = Server(
        config={"QUEUE_SIZE": 20, "SEND_BUFFER": 65536},
        extra=["--timeout", "10"],
    )
    server.env["TEST_GUESTS"] = "publish-on-disconnect"
    server.start()
    audit = RawStream(server.url, "/stream/audit")
    stuck = RawStream(server.url, "/stream/feed", rcvbuf=4096)  # never read
    try:
        audit.open()
        server.wait_for(lambda s: s["connections"] == 2)
        server.publish("feed", "{n}" + "x" * 4096, count=200)
        (left,) = audit.events(1)
        assert (left.event, left.data) == ("left", "overflow feed")
        # Publishing goes on.
        (id,) = server.publish("other", "after")
        stats = server.wait_for(lambda s: s["connections"] == 1)
        assert stats["counters"]["dropped"] == 1
        assert id
    finally:
        stuck.close()
        audit.close()
        server.stop()


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_raising_receiver_does_not_stop_the_redis_listener(
    redis_server: RedisServer,
) -> None:
    # close_channel reaches each worker through its listener, which ends the
    # channel's streams and so sends client_disconnected from its thread.
    server = Server(
        config={
            "BACKEND": redis_server.url,
            "REDIS_PREFIX": f"g{uuid.uuid4().hex[:8]}:",
        }
    )
    server.env["TEST_GUESTS"] = "raise"
    server.start()
    doomed = RawStream(server.url, "/stream/doomed")
    alive = RawStream(server.url, "/stream/alive")
    try:
        doomed.open()
        alive.open()
        server.wait_for(lambda s: s["connections"] == 2)
        server.http.post("/close", data={"channel": "doomed"}, timeout=5)
        assert doomed.read_to_end().replace(b":\n", b"") == b""
        server.wait_ended("doomed", "revoked")
        server.wait_for(lambda s: s["connections"] == 1)
        # Other channels still get their events.
        for n in range(3):
            server.publish("alive", f"still {n}")
        assert [e.data for e in alive.events(3)] == ["still 0", "still 1", "still 2"]
        assert server.stats()["counters"]["callback_errors"] == 1
    finally:
        doomed.close()
        alive.close()
        server.stop()


def test_a_raising_receiver_is_logged_and_the_others_run() -> None:
    from flask import Flask

    from flask_eventstream import EventStream
    from flask_eventstream import signals

    app = Flask(__name__)
    events = EventStream(app)
    seen: list[str] = []

    def broken(sender: Flask, **extra: t.Any) -> None:
        raise RuntimeError("bug")

    def fine(sender: Flask, channel: str, event: t.Any) -> None:
        seen.append(event.data)

    with signals.event_published.connected_to(broken, app):
        with signals.event_published.connected_to(fine, app):
            with app.app_context():
                stored = events.publish("c", "x")
                assert stored.id
                assert events.stats()["counters"]["callback_errors"] == 1
    assert seen == ["x"]


def test_an_authorize_that_raises_is_a_503_not_a_500() -> None:
    from flask import Flask

    from flask_eventstream import EventStream

    app = Flask(__name__)
    events = EventStream(app)

    @events.authorize
    def authorize(channel: str) -> bool:
        raise ConnectionError("the user database is down")

    response = app.test_client().get("/events/c?transport=poll")
    assert response.status_code == 503
    assert b"authorization check failed" in response.data
    with app.app_context():
        assert events.stats()["counters"]["callback_errors"] == 1
