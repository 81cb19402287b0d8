"""A stream that goes live on a channel whose listener subscription is being
dropped is fed or ended, never left deaf; and a pooled read the listener makes
while idle (its store check) failing for want of a free connection does not
drop its healthy pub/sub connection. In process, against the session's Redis.
"""

from __future__ import annotations

import logging
import time
import typing as t
import uuid

import pytest
import redis
from conftest import RedisServer
from flask import Flask

from flask_eventstream import EventStream
from flask_eventstream.backends.redis import RedisBackend


def redis_app(redis_server: RedisServer, **config: t.Any) -> tuple[Flask, EventStream]:
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = redis_server.url
    app.config["EVENTSTREAM_REDIS_PREFIX"] = f"gap-{uuid.uuid4().hex[:8]}:"
    for key, value in config.items():
        app.config[f"EVENTSTREAM_{key}"] = value
    return app, EventStream(app)


def test_a_stream_that_joins_while_its_channel_is_unlistened_is_fed_or_ended(
    redis_server: RedisServer,
) -> None:
    """The last subscription of a channel leaves (the bus is empty) and, before
    the backend stops listening, another joins: it finds the channel still
    listened to and goes live at once. Under gevent that is what happens when
    the unlisten waits for the listener's lock (held while it connects). The
    listener then unsubscribes: the new one must not wait in silence.
    """
    app, events = redis_app(redis_server)
    with app.app_context():
        backend = events.hub_for().backend
        assert isinstance(backend, RedisBackend)
        first = events.subscribe("c", last_event_id=None)
        first.open()
        joined: list[t.Any] = []
        real_unlisten = backend.listener.unlisten

        def unlisten_late(key: bytes) -> None:
            # The join comes between the bus's "last one gone" and the unlisten.
            if not joined:
                late = events.subscribe("c", last_event_id=None)
                late.open()
                joined.append(late)
            real_unlisten(key)

        backend.listener.unlisten = unlisten_late  # type: ignore[method-assign]
        first.close()
        (late,) = joined
        sent = events.publish("c", "after")
        deadline = time.monotonic() + 5
        got: list[t.Any] = []
        while time.monotonic() < deadline and late.ended is None and not got:
            got = late.wait(0.1) or []
        try:
            assert late.ended is not None or [r.event.id for r in got] == [sent.id], (
                "the stream that joined is live and got nothing"
            )
        finally:
            late.close()
            backend.close()


def test_a_failed_store_check_does_not_drop_the_listeners_connection(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The idle check reads the store through the pool. A crowd of
    reconnecting clients can hold every pooled connection: the check fails
    with 'No connection available', which says nothing of the listener's own
    connection. It is tried again at the next idle check; the listener keeps
    its subscriptions and delivers on.
    """
    app, events = redis_app(redis_server, REDIS_IDLE_CHECK=0.2)
    with app.app_context():
        backend = events.hub_for().backend
        assert isinstance(backend, RedisBackend)
        sub = events.subscribe("c", last_event_id=None)
        sub.open()
        failed: list[float] = []
        real_newest = backend.store.newest

        def newest() -> t.Any:
            if len(failed) < 2:
                failed.append(time.monotonic())
                raise redis.ConnectionError("No connection available.")
            return real_newest()

        backend.store.newest = newest  # type: ignore[method-assign]
        try:
            with caplog.at_level(logging.WARNING, "flask_eventstream"):
                deadline = time.monotonic() + 5
                while len(failed) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(failed) == 2
                sent = events.publish("c", "after")
                got = sub.wait(5) or []
                assert [r.event.id for r in got] == [sent.id]
            assert backend.listener.failures == 0
            lost = [r for r in caplog.records if "lost its connection" in r.message]
            assert not lost, lost[0].message
        finally:
            sub.close()
            backend.close()
