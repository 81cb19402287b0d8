from __future__ import annotations

import gc
import json
import threading
import time
import typing as t
import weakref

import pytest
from flask import Flask
from flask import request
from flask.json.provider import DefaultJSONProvider

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import signals
from flask_eventstream import stream
from flask_eventstream.ids import parse_id
from flask_eventstream.settings import DEFAULTS
from flask_eventstream.testing import iter_events


def test_init_app_sets_every_default(app: Flask) -> None:
    app.config["EVENTSTREAM_HISTORY"] = 5
    events = EventStream()
    events.init_app(app)
    assert app.extensions["eventstream"] is events
    for key, value in DEFAULTS.items():
        assert key in app.config
        if key not in ("EVENTSTREAM_HISTORY", "EVENTSTREAM_HEARTBEAT"):
            assert app.config[key] == value
    assert app.config["EVENTSTREAM_HISTORY"] == 5


def test_second_registration_is_refused(app: Flask, events: EventStream) -> None:
    with pytest.raises(RuntimeError, match="already registered"):
        EventStream(app)
    with pytest.raises(RuntimeError, match="already registered"):
        events.init_app(app)


def test_unregistered_app_says_what_to_do(events: EventStream) -> None:
    other = Flask("other")
    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        events.publish("a", "x")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVENTSTREAM_HISTORY", 0),
        ("EVENTSTREAM_QUEUE_SIZE", "10"),
        ("EVENTSTREAM_RETRY", 1.5),
        ("EVENTSTREAM_BACKEND", "mysql://x"),
    ],
)
def test_bad_configuration_is_a_clear_error(key: str, value: object) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(
        ValueError, match=key if key != "EVENTSTREAM_BACKEND" else "mysql"
    ):
        EventStream(app)


def test_several_apps_in_one_process_keep_their_channels_apart() -> None:
    events = EventStream()
    one, two = Flask("one"), Flask("two")
    events.init_app(one)
    events.init_app(two)
    received: list[str] = []

    @one.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("news", last_event_id=None)

    with one.test_client().get("/s", buffered=False) as rv:
        stream_events = iter_events(rv, timeout=2)
        with two.app_context():
            events.publish("news", "for two")
        with one.app_context():
            events.publish("news", "for one")
        received.append(next(stream_events).data)
    assert received == ["for one"]


def test_publish_returns_stored_event_with_id(app: Flask, events: EventStream) -> None:
    with app.app_context():
        first = events.publish("orders", {"status": "shipped"}, event="order")
        second = events.publish("orders", "plain")
    assert first.event == "order"
    assert json.loads(first.data) == {"status": "shipped"}
    assert second.data == "plain"
    assert first.id is not None and second.id is not None
    first_at, second_at = parse_id(first.id), parse_id(second.id)
    assert first_at is not None and second_at is not None
    assert first_at.epoch == second_at.epoch
    assert first_at.key < second_at.key


def test_publish_uses_the_app_json_provider(app: Flask, events: EventStream) -> None:
    class Compact(DefaultJSONProvider):
        def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
            return json.dumps(obj, separators=(",", ":"), sort_keys=True)

    app.json = Compact(app)
    with app.app_context():
        assert events.publish("a", {"b": 1, "a": 2}).data == '{"a":2,"b":1}'


@pytest.mark.parametrize("channel", ["", "a b", "a/b", "x" * 129, "caf\u00e9", 5])
def test_publish_refuses_bad_channel(
    app: Flask, events: EventStream, channel: t.Any
) -> None:
    with app.app_context(), pytest.raises(ValueError, match="channel"):
        events.publish(channel, "x")


def test_publish_refuses_bad_event_name(app: Flask, events: EventStream) -> None:
    with app.app_context(), pytest.raises(ValueError, match="event"):
        events.publish("a", "x", event="a\nb")


def test_publish_refuses_oversized_event(app: Flask) -> None:
    app.config["EVENTSTREAM_MAX_EVENT_BYTES"] = 100
    events = EventStream(app)
    with app.app_context(), pytest.raises(ValueError, match="MAX_EVENT_BYTES"):
        events.publish("a", "x" * 200)


def test_publish_from_a_thread_with_app_context(
    app: Flask, events: EventStream
) -> None:
    ids: list[str | None] = []

    def work() -> None:
        with app.app_context():
            ids.append(events.publish("jobs", "done").id)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    with app.app_context():
        replay = list(_take(events.subscribe("jobs", last_event_id="0-0"), 1))
    assert [e.id for e in replay] == ids


def test_publish_outside_any_app_context_uses_the_one_app(
    app: Flask, events: EventStream
) -> None:
    with app.app_context():
        cursor = events.publish("j", "before").id
    ids: list[str | None] = []
    thread = threading.Thread(
        target=lambda: ids.append(events.publish("j", {"a": 1}).id)
    )
    thread.start()
    thread.join(5)
    with app.app_context():
        replay = list(_take(events.subscribe("j", last_event_id=cursor), 1))
    assert [(e.id, e.data) for e in replay] == [(ids[0], '{"a": 1}')]


def test_publish_outside_an_app_context_with_two_apps_names_the_fix() -> None:
    events = EventStream()
    apps = [Flask("one"), Flask("two")]  # held: the extension holds apps weakly
    for app in apps:
        events.init_app(app)
    with pytest.raises(RuntimeError, match=r"with app\.app_context\(\)"):
        events.publish("a", "x")


def test_publish_from_a_cli_command(app: Flask, events: EventStream) -> None:
    @app.cli.command("announce")
    def announce() -> None:
        print(events.publish("news", "from cli").id)

    result = app.test_cli_runner().invoke(args=["announce"])
    assert result.exit_code == 0
    assert "-" in result.output


def test_cli_publish_refuses_memory_backend(app: Flask, events: EventStream) -> None:
    result = app.test_cli_runner().invoke(args=["eventstream", "publish", "a", "x"])
    assert result.exit_code != 0
    assert "EVENTSTREAM_BACKEND is 'memory'" in result.output


def test_signals(app: Flask, events: EventStream) -> None:
    seen: list[tuple[str, t.Any]] = []

    def on_publish(sender: Flask, channel: str, event: Event) -> None:
        seen.append(("published", (channel, event.data)))

    def on_connect(sender: Flask, subscription: t.Any) -> None:
        seen.append(("connected", subscription.channels))

    def on_disconnect(sender: Flask, subscription: t.Any, reason: str) -> None:
        seen.append(("disconnected", reason))

    @app.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("a")

    with (
        signals.event_published.connected_to(on_publish, app),
        signals.client_connected.connected_to(on_connect, app),
        signals.client_disconnected.connected_to(on_disconnect, app),
    ):
        with app.test_client().get("/s", buffered=False) as rv:
            stream_events = iter_events(rv, timeout=2)
            with app.app_context():
                events.publish("a", "x")
            next(stream_events)
    assert seen == [
        ("connected", ("a",)),
        ("published", ("a", "x")),
        ("disconnected", "closed"),
    ]


def test_subscription_stream_holds_no_request(app: Flask, events: EventStream) -> None:
    requests: list[weakref.ref[t.Any]] = []

    @app.get("/s")
    @stream
    def s() -> t.Any:
        requests.append(weakref.ref(request._get_current_object()))  # type: ignore[attr-defined]
        return events.subscribe("a")

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/s",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }
    body = app.wsgi_app(environ, lambda status, headers: None)
    first = next(iter(body))
    assert first.startswith(b"retry: ")
    del environ
    gc.collect()
    assert requests[0]() is None, "the open stream keeps the request alive"
    with app.app_context():
        events.publish("a", "live")
    assert next(iter(body)).endswith(b"data: live\n\n")
    body.close()
    with app.app_context():
        assert events.stats()["connections"] == 0


def _take(iterable: t.Iterable[Event], n: int) -> t.Iterator[Event]:
    for index, item in enumerate(iterable):
        yield item
        if index + 1 == n:
            return


@pytest.mark.parametrize(
    ("channel", "event", "message"),
    [
        ("a", "eventstream-reset", "reserved"),
        ("a", "eventstream-join", "reserved"),
        (".", None, "Invalid channel"),
        ("..", None, "Invalid channel"),
        ("a", "ty\0pe", "NUL"),
    ],
)
def test_publish_refuses_reserved_types_and_path_like_channels(
    app: Flask, events: EventStream, channel: str, event: str | None, message: str
) -> None:
    with app.app_context(), pytest.raises(ValueError, match=message):
        events.publish(channel, "x", event=event)


def test_a_repeat_with_the_same_idempotency_key_stores_nothing() -> None:
    other = Flask("other")
    other.config["EVENTSTREAM_IDEMPOTENCY_WINDOW"] = 0.3
    events2 = EventStream(other)
    with other.app_context():
        cursor = events2.publish("jobs", "start").id
        first = events2.publish("jobs", {"done": 1}, idempotency_key="job-1")
        again = events2.publish("jobs", {"done": 1}, idempotency_key="job-1")
        other_key = events2.publish("jobs", {"done": 2}, idempotency_key="job-2")
        assert again == first and again.id == first.id
        stored = list(_take(events2.subscribe("jobs", last_event_id=cursor), 2))
        assert [e.id for e in stored] == [first.id, other_key.id]
        assert events2.stats()["counters"]["published"] == 3
        time.sleep(0.4)  # past the window: the key is free again
        later = events2.publish("jobs", {"done": 1}, idempotency_key="job-1")
        assert later.id != first.id


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "caf\u00e9", 7])
def test_a_bad_idempotency_key_is_a_value_error(
    app: Flask, events: EventStream, key: t.Any
) -> None:
    with app.app_context(), pytest.raises(ValueError, match="idempotency key"):
        events.publish("a", "x", idempotency_key=key)
