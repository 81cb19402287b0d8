"""Faults in one process: what is logged and counted, closing channels,
shutting down, and the bounds the memory backend keeps.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import typing as t

import pytest
from conftest import add_views
from conftest import publish
from conftest import RedisServer
from flask import Flask
from flask.testing import FlaskClient

from flask_eventstream import EventStream
from flask_eventstream import PublishError
from flask_eventstream import stream
from flask_eventstream.backends.memory import MemoryBackend
from flask_eventstream.ids import Cursor
from flask_eventstream.ids import CursorProblem
from flask_eventstream.ids import parse_id
from flask_eventstream.testing import iter_events
from flask_eventstream.wire import Event


def counters(app: Flask, events: EventStream) -> dict[str, int]:
    with app.app_context():
        return t.cast(dict[str, int], events.stats()["counters"])


def test_refusals_are_logged_with_channel_and_counted(
    app: Flask,
    events: EventStream,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "flask_eventstream")
    assert client.get("/sub/secret").status_code == 403
    assert client.get("/sub/bad%20name").status_code == 400
    assert client.get("/sub/a?transport=poll").status_code == 200
    assert counters(app, events)["refused"] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert "Refused a subscription: authorize refused 'secret'." in messages
    assert any("Invalid channel name 'bad name'" in m for m in messages)


def test_connection_limit_refusal_is_logged(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["EVENTSTREAM_MAX_CONNECTIONS"] = 1
    events = EventStream(app)
    client = add_views(app, events)
    caplog.set_level(logging.INFO, "flask_eventstream")
    with client.get("/sub/a", buffered=False) as first:
        assert first.status_code == 200
        over = client.get("/sub/a")
        assert over.status_code == 503
        assert over.headers["Retry-After"] == "5"
    assert counters(app, events)["refused"] == 1
    assert "the worker holds 1 streams" in caplog.text


def test_reset_and_overflow_are_logged_with_reason_and_counted(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "flask_eventstream")
    app.config["EVENTSTREAM_QUEUE_SIZE"] = 3
    events = EventStream(app)
    client = add_views(app, events)
    with client.get("/sub/a", buffered=False, headers={"Last-Event-ID": "1-0"}) as rv:
        reset = next(iter_events(rv, timeout=2))
    assert reset.event == "eventstream-reset"
    assert "Reset <Subscription a> at cursor '1-0' (epoch)" in caplog.text
    assert counters(app, events)["resets"] == 1

    with app.app_context():
        sub = events.subscribe("a", last_event_id=None)
    sub.open()
    for n in range(4):  # one more than the queue holds: nobody reads it
        publish(app, events, "a", str(n))
    assert sub.wait(0) is None
    assert "Dropped <Subscription a> (overflow)" in caplog.text
    assert counters(app, events)["dropped"] == 1
    assert counters(app, events)["published"] == 4


def test_backend_errors_are_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from conftest import free_port

    app = Flask("down")
    app.config["EVENTSTREAM_BACKEND"] = f"redis://127.0.0.1:{free_port()}/0"
    events = EventStream(app)

    @app.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("a")

    with app.app_context(), pytest.raises(PublishError):
        events.publish("news", "x")
    client = app.test_client()
    assert client.get("/s?transport=poll").status_code == 503
    with client.get("/s", buffered=False) as rv:
        assert rv.status_code == 200  # a pause: the browser comes back
        assert b"".join(rv.response).startswith(b"retry: ")
    assert counters(app, events)["errors"] == 3
    assert "Publish to 'news' failed" in caplog.text
    assert "Stream of <Subscription a> not opened" in caplog.text


def test_close_channel_ends_streams_long_polls_and_iterations(
    app: Flask, events: EventStream, client: FlaskClient
) -> None:
    first = publish(app, events, "a", "one")
    results: dict[str, bytes] = {}

    def read(name: str, url: str) -> None:
        with client.get(url, buffered=False) as rv:
            results[name] = b"".join(rv.response)

    readers = [
        threading.Thread(target=read, args=(name, url))
        for name, url in [
            ("stream", "/sub/a,b"),
            ("longpoll", "/sub/a?transport=longpoll&timeout=20"),
            ("iterate", "/iterate/a"),
            ("other", "/sub/b?transport=longpoll&timeout=1"),
        ]
    ]
    for reader in readers:
        reader.start()
    with app.app_context():

        def subscribed() -> bool:
            return events.stats()["channels"].get("a") == 3

        for _ in range(200):  # bounded: each turn waits on the readers
            if subscribed():
                break
            readers[0].join(0.01)
        assert subscribed()
        events.close_channel("a")
    for reader in readers:
        reader.join(5)
        assert not reader.is_alive()
    # All three counted, whoever ended each: close_channel, or the
    # subscription itself at the end of opening (in its reader's thread).
    with app.app_context():
        assert events.stats()["counters"]["revoked"] == 3
    assert results["stream"].endswith(b"\n\n") or results["stream"].endswith(b":\n")
    assert json.loads(results["longpoll"])["events"] == []
    assert not results["iterate"].startswith(b"data: seen")
    # A channel not closed is left alone: its long-poll ran to its timeout.
    assert json.loads(results["other"])["lastEventId"] == first.id
    with app.app_context(), pytest.raises(ValueError, match="Invalid channel"):
        events.close_channel("no spaces")


def test_a_subscription_revoked_while_it_opens_is_counted(
    app: Flask, events: EventStream
) -> None:
    # close_channel while a subscription is between authorize and the bus
    # (or in another thread, still replaying): it ends itself at the end of
    # open, and the revocation counts it like those close_channel reached.
    with app.app_context():
        sub = events.subscribe("a", last_event_id=None)
        events.close_channel("a")
        assert events.stats()["counters"]["revoked"] == 0  # nothing was live
        sub.open()
        assert sub.wait(0) is None
        assert events.stats()["counters"]["revoked"] == 1
        assert events.stats()["connections"] == 0


def test_close_channel_reaches_every_worker_through_redis(
    redis_server: RedisServer,
) -> None:
    # Two apps stand for two workers: each has its own listener.
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config["EVENTSTREAM_BACKEND"] = redis_server.url
        app.config["EVENTSTREAM_REDIS_PREFIX"] = "close-test:"
        apps.append((app, EventStream(app)))
    subs = []
    for app, events in apps:
        with app.app_context():
            sub = events.subscribe("room", last_event_id=None)
        sub.open()
        subs.append(sub)
    app, events = apps[0]
    with app.app_context():
        sent = events.publish("room", "hello")
    for sub in subs:
        fresh = sub.wait(5)
        assert fresh is not None and [r.event.id for r in fresh] == [sent.id]
    with app.app_context():
        events.close_channel("room")
    for sub in subs:
        assert sub.wait(5) is None
        assert sub.ended == "revoked"


def test_shutdown_ends_streams_with_a_jittered_retry(app: Flask) -> None:
    app.config["EVENTSTREAM_RETRY"] = 1.0
    events = EventStream(app)
    client = add_views(app, events)
    results: list[bytes] = []

    def read(url: str) -> None:
        with client.get(url, buffered=False) as rv:
            results.append(b"".join(rv.response))

    readers = [threading.Thread(target=read, args=("/sub/a",)) for _ in range(20)]
    readers.append(threading.Thread(target=read, args=("/iterate/a",)))
    for reader in readers:
        reader.start()
    with app.app_context():
        deadline = time.monotonic() + 20  # 21 threads on a loaded machine
        while events.stats()["connections"] < 21 and time.monotonic() < deadline:
            readers[0].join(0.01)
        assert events.shutdown() == 21
    for reader in readers:
        reader.join(5)
        assert not reader.is_alive()
    hints = []
    for body in results:
        match = re.search(rb"retry: (\d+)\n\Z", body)
        assert match is not None, body
        hints.append(int(match[1]))
    assert all(1000 <= hint <= 2000 for hint in hints)
    assert len(set(hints)) > 1
    # A stream asked for after the stop gets its hint and nothing else: it
    # reads no history and takes no connection slot.
    body = b"".join(client.get("/sub/a", buffered=False).response)
    match = re.fullmatch(rb"retry: (\d+)\n", body)
    assert match is not None and 1000 <= int(match[1]) <= 2000, body
    with app.app_context():
        assert events.stats()["connections"] == 0


def test_nothing_keeps_a_closed_subscription(
    app: Flask, events: EventStream, client: FlaskClient
) -> None:
    import gc
    import weakref

    with app.app_context():
        subs = [events.subscribe("a", "b", last_event_id=None) for _ in range(3)]
    for sub in subs:
        sub.open()
    refs = [weakref.ref(sub) for sub in subs]
    with app.app_context():
        assert events.stats()["channels"] == {"a": 3, "b": 3}
    for sub in subs:
        sub.close()
    del sub, subs
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    with app.app_context():
        assert events.stats()["channels"] == {}


def test_memory_backend_forgets_least_recent_channels_beyond_its_cap() -> None:
    backend = MemoryBackend(10, channels=2)
    a = backend.append("a", Event("1"))
    backend.append("b", Event("2"))
    backend.append("a", Event("3"))  # a is now the most recent
    backend.append("c", Event("4"))  # b is forgotten
    assert set(backend.stats()["history"]) == {"a", "c"}
    with pytest.raises(CursorProblem) as problem:
        backend.read(["b"], Cursor(a.key, backend.epoch), 1000)
    assert problem.value.reason == "expired"
    assert [
        r.event.data for r in backend.read(["a"], Cursor(a.key, backend.epoch), 1000)
    ] == ["3"]
    # A cursor newer than what was forgotten loses nothing: no reset.
    head = parse_id(backend.append("c", Event("5")).event.id or "")
    assert head is not None and backend.read(["b"], head, 1000) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVENTSTREAM_MAX_LIFETIME", 0),
        ("EVENTSTREAM_SEND_TIMEOUT", -1),
        ("EVENTSTREAM_SEND_BUFFER", "big"),
        ("EVENTSTREAM_HISTORY_CHANNELS", 0),
        ("EVENTSTREAM_REDIS_POOL_SIZE", 0),
        ("EVENTSTREAM_REDIS_POOL_SIZE", 2.5),
        ("EVENTSTREAM_REDIS_TIMEOUT", 0),
        ("EVENTSTREAM_REDIS_BATCH_TIMEOUT", float("inf")),
        ("EVENTSTREAM_REDIS_IDLE_CHECK", "5"),
    ],
)
def test_new_limits_are_checked(key: str, value: t.Any) -> None:
    app = Flask("limits")
    app.config[key] = value
    with pytest.raises(ValueError, match=key):
        EventStream(app)


def test_redis_down_at_start_is_answered_at_once_and_said_plainly() -> None:
    """Before: the first stream waited 10 s, and the log said the listener
    "lost its connection", which it never had.
    """
    from clients import RawStream
    from conftest import free_port
    from conftest import Server

    port = free_port()
    server = Server(config={"BACKEND": f"redis://127.0.0.1:{port}/0"}).start()
    redis = RedisServer()
    redis.port, redis.url = port, f"redis://127.0.0.1:{port}/0"  # started below
    try:
        for transport, status in (("eventsource", 200), ("poll", 503)):
            started = time.monotonic()
            answer = server.http.get(f"/stream/down?transport={transport}")
            took = time.monotonic() - started
            assert answer.status_code == status, answer.text
            assert took < 1.0, f"{transport} answered after {took:.1f}s"
        stream = server.http.get("/stream/down").text
        assert stream.startswith("retry: ") and ": the backend is unavailable" in stream
        # The last hint is jittered (RETRY is 0.5 s here): clients come back
        # spread out when Redis does.
        hints = set()
        for _ in range(10):
            body = server.http.get("/stream/down").text
            hints.add(int(re.findall(r"^retry: (\d+)$", body, re.M)[-1]))
        assert all(500 <= hint <= 1000 for hint in hints) and len(hints) > 1, hints
        log = server.output()
        assert f"Redis listener cannot connect to 127.0.0.1:{port}" in log, log
        assert "lost its connection" not in log, log
        # Once Redis is up, streams open and the log says so.
        redis.start()
        deadline = time.monotonic() + 15
        while "Redis listener connected to" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        raw = RawStream(server.url, "/stream/down")
        try:
            assert raw.open() == []
            sent = server.publish("down", "back")
            assert [e.id for e in raw.events(1)] == sent
        finally:
            raw.close()
    finally:
        server.stop()
        redis.stop()
