from __future__ import annotations

import gc
import json
import logging
import re
import threading
import time
import typing as t
import weakref

import pytest
from conftest import Server
from flask import Flask
from flask import request
from flask.json.provider import DefaultJSONProvider

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import signals
from flask_eventstream import stream
from flask_eventstream.ids import parse_id
from flask_eventstream.settings import DEFAULTS
from flask_eventstream.settings import Settings
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
        ("EVENTSTREAM_RETRY", "3"),
        ("EVENTSTREAM_RETRY", -1),
        ("EVENTSTREAM_RETRY", float("nan")),
        ("EVENTSTREAM_PRESENCE", "yes"),
        ("EVENTSTREAM_REWIND", 1001),
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


NAN, INF = float("nan"), float("inf")
DURATION = r"must be a positive number of seconds, at most 315360000 \(ten years\)"
COUNT = "must be a whole number from 1 to 2147483647"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # Durations: one rule, finite and bounded (NaN pinned a worker).
        ({"EVENTSTREAM_POLL_TIMEOUT": NAN}, f"EVENTSTREAM_POLL_TIMEOUT {DURATION}"),
        ({"EVENTSTREAM_HEARTBEAT": NAN}, f"EVENTSTREAM_HEARTBEAT {DURATION}"),
        ({"EVENTSTREAM_SEND_TIMEOUT": INF}, f"EVENTSTREAM_SEND_TIMEOUT {DURATION}"),
        ({"EVENTSTREAM_MAX_LIFETIME": NAN}, f"EVENTSTREAM_MAX_LIFETIME {DURATION}"),
        ({"EVENTSTREAM_HISTORY_TTL": 1e20}, f"EVENTSTREAM_HISTORY_TTL {DURATION}"),
        ({"EVENTSTREAM_IDEMPOTENCY_WINDOW": 1e20}, f"IDEMPOTENCY_WINDOW {DURATION}"),
        ({"EVENTSTREAM_REDIS_TIMEOUT": 1e20}, f"EVENTSTREAM_REDIS_TIMEOUT {DURATION}"),
        (
            {"EVENTSTREAM_NAMESPACES": {"u.": {"history_ttl": NAN}}},
            rf"NAMESPACES\['u.'\].history_ttl {DURATION}",
        ),
        # Counts: whole numbers from 1, never truncated or rounded.
        ({"EVENTSTREAM_HISTORY": 0.5}, f"EVENTSTREAM_HISTORY {COUNT}, not 0.5"),
        ({"EVENTSTREAM_POLL_BATCH": 0.5}, f"EVENTSTREAM_POLL_BATCH {COUNT}"),
        ({"EVENTSTREAM_QUEUE_SIZE": 2.5}, f"EVENTSTREAM_QUEUE_SIZE {COUNT}"),
        ({"EVENTSTREAM_HISTORY": NAN}, f"EVENTSTREAM_HISTORY {COUNT}, not nan"),
        ({"EVENTSTREAM_MAX_CHANNELS": INF}, f"EVENTSTREAM_MAX_CHANNELS {COUNT}"),
        ({"EVENTSTREAM_MAX_EVENT_BYTES": 0.1}, f"MAX_EVENT_BYTES {COUNT}"),
        ({"EVENTSTREAM_SEND_BUFFER": 2**31}, f"EVENTSTREAM_SEND_BUFFER {COUNT}"),
        ({"EVENTSTREAM_MAX_CONNECTIONS": True}, f"MAX_CONNECTIONS {COUNT}"),
        (
            {"EVENTSTREAM_NAMESPACES": {"u.": {"history": 0.5}}},
            rf"NAMESPACES\['u.'\].history {COUNT}",
        ),
        # Switches: True or False, never bool() of a str.
        (
            {"EVENTSTREAM_CORS_CREDENTIALS": "False"},
            "EVENTSTREAM_CORS_CREDENTIALS must be True or False, not 'False'"
            r" \(in an environment variable .* write true or false",
        ),
        ({"EVENTSTREAM_DIRECT_WRITES": "no"}, "DIRECT_WRITES must be True or False"),
        ({"EVENTSTREAM_DIRECT_WRITES": 0}, "DIRECT_WRITES must be True or False"),
        # The other keys: a ValueError naming the key, not another error.
        ({"EVENTSTREAM_URL_PREFIX": 5}, "URL_PREFIX must be a path starting with"),
        ({"EVENTSTREAM_URL_PREFIX": "events"}, "URL_PREFIX must be a path starting"),
        ({"EVENTSTREAM_CORS_ORIGINS": 5}, "EVENTSTREAM_CORS_ORIGINS must be None"),
        ({"EVENTSTREAM_CORS_ORIGINS": [b"x"]}, "EVENTSTREAM_CORS_ORIGINS must be"),
        ({"EVENTSTREAM_REDIS_PREFIX": None}, "EVENTSTREAM_REDIS_PREFIX must be a str"),
        # Retry: at most a day, in either unit (1e300 made a 298-digit line).
        (
            {"EVENTSTREAM_RETRY": 1e300},
            r"EVENTSTREAM_RETRY must be None or a number of seconds from 0 to"
            r" 86400 \(a day\), not 1e\+300 \(100 or more is read as milli",
        ),
        ({"EVENTSTREAM_RETRY": INF}, "EVENTSTREAM_RETRY must be None or a number"),
    ],
)
def test_each_kind_of_value_has_one_rule_naming_the_key(
    config: dict[str, t.Any], message: str
) -> None:
    app = Flask("bad")
    app.config.update(config)
    with pytest.raises(ValueError, match=message):
        EventStream(app)


def test_values_within_the_rules_are_kept() -> None:
    ten_years = 10 * 365 * 24 * 3600
    config = {
        **DEFAULTS,
        "EVENTSTREAM_HISTORY": 5.0,  # a whole float, as JSON may give
        "EVENTSTREAM_SEND_BUFFER": 2**31 - 1,
        "EVENTSTREAM_HISTORY_TTL": ten_years,
        "EVENTSTREAM_HEARTBEAT": 1,
        "EVENTSTREAM_CORS_ORIGINS": "https://app.example",
        "EVENTSTREAM_URL_PREFIX": "/api/events",
        "EVENTSTREAM_RETRY": 86_400_000,  # a day, in the old milliseconds
    }
    with pytest.warns(DeprecationWarning):
        settings = Settings(config)
    assert (settings.history, type(settings.history)) == (5, int)
    assert settings.send_buffer == 2**31 - 1
    assert settings.history_ttl == float(ten_years)
    assert (settings.heartbeat, type(settings.heartbeat)) == (1.0, float)
    assert settings.cors_origins == {"https://app.example"}
    assert settings.url_prefix == "/api/events"
    assert settings.retry == 86_400_000


def test_a_nan_duration_from_the_environment_stops_the_server() -> None:
    # FLASK_EVENTSTREAM_POLL_TIMEOUT=NaN: from_prefixed_env reads it as JSON,
    # a float NaN. It was accepted, and one long-poll pinned the worker.
    server = Server(config={"POLL_TIMEOUT": "NaN"})
    try:
        with pytest.raises(RuntimeError, match="server exited"):
            server.start()
    finally:
        server.stop()
    assert server.env["FLASK_EVENTSTREAM_POLL_TIMEOUT"] == "NaN"
    assert re.search(
        f"ValueError: EVENTSTREAM_POLL_TIMEOUT {DURATION}, not nan", server.output()
    )


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_eventstream" and r.levelno == logging.WARNING
    ]


def test_an_unknown_key_is_a_warning_naming_the_closest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask("typo")
    app.config["EVENTSTREAM_HEARTBEET"] = 5
    app.config["EVENTSTREAM_ZZZ"] = 1
    EventStream(app)
    assert warnings_logged(caplog) == [
        "Unknown configuration key EVENTSTREAM_HEARTBEET (ignored):"
        " did you mean EVENTSTREAM_HEARTBEAT?",
        "Unknown configuration key EVENTSTREAM_ZZZ (ignored).",
    ]
    assert app.config["EVENTSTREAM_HEARTBEAT"] == DEFAULTS["EVENTSTREAM_HEARTBEAT"]


@pytest.mark.parametrize(
    ("key", "closest"),
    [
        ("eventstream_heartbeat", "EVENTSTREAM_HEARTBEAT"),
        ("EVENTSTREAM_heartbeat", "EVENTSTREAM_HEARTBEAT"),
        ("Eventstream_Poll_Timeout", "EVENTSTREAM_POLL_TIMEOUT"),
    ],
)
def test_an_unknown_key_in_any_case_names_the_key_meant(
    caplog: pytest.LogCaptureFixture, key: str, closest: str
) -> None:
    app = Flask("case")
    app.config[key] = 5
    EventStream(app)
    assert warnings_logged(caplog) == [
        f"Unknown configuration key {key} (ignored): did you mean {closest}?"
    ]


def test_known_keys_from_the_environment_warn_nothing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the examples and the test servers are configured: every key once.
    for key in DEFAULTS.keys() - {"EVENTSTREAM_NAMESPACES"}:  # nested below
        monkeypatch.setenv(f"FLASK_{key}", json.dumps(DEFAULTS[key]))
    monkeypatch.setenv("FLASK_EVENTSTREAM_NAMESPACES__room.__presence", "true")
    monkeypatch.setenv("FLASK_OTHER_SETTING", "1")
    app = Flask("env")
    app.config.from_prefixed_env()
    app.config["EVENTSTREAMING"] = "not ours"  # no underscore: another prefix
    events = EventStream(app)
    assert warnings_logged(caplog) == []
    assert events.hub_for(app).settings.channel("room.1").presence is True


def subscribed_app(**config: t.Any) -> Flask:
    """An app with ``config`` and ``GET /s``, a stream of channel ``a``."""
    app = Flask("subscribed")
    app.config.update(config)
    events = EventStream(app)

    @app.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("a")

    return app


@pytest.mark.parametrize(
    ("value", "sent"), [(3.0, 3000), (0.25, 250), (0, 0), (99, 99000), (2, 2000)]
)
def test_retry_is_in_seconds_and_sent_in_milliseconds(value: float, sent: int) -> None:
    app = subscribed_app(EVENTSTREAM_RETRY=value)
    with app.test_client().get("/s", buffered=False) as rv:
        assert next(rv.response).startswith(f"retry: {sent}\n".encode())
    # A poll's "retry" is in milliseconds too: it is wire format, as retry:.
    assert app.test_client().get("/s?transport=poll").json["retry"] == sent


def test_retry_none_sends_no_retry_line() -> None:
    app = subscribed_app(EVENTSTREAM_RETRY=None)
    with app.test_client().get("/s", buffered=False) as rv:
        assert b"retry:" not in next(rv.response)


def test_a_retry_in_milliseconds_is_read_with_a_deprecation_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = (
        "EVENTSTREAM_RETRY is in seconds now: 3000 read as 3.0 s; set 3.0"
        " (a value under 100 is read as seconds)"
    )
    app = Flask("legacy")
    app.config["EVENTSTREAM_RETRY"] = 3000
    with pytest.warns(DeprecationWarning, match=re.escape(expected)) as caught:
        events = EventStream()
        events.init_app(app)
    assert caught[0].filename == __file__  # the line that configured it
    assert warnings_logged(caplog) == [expected]
    assert events.hub_for(app).settings.retry == 3000


def test_the_stream_retry_option_is_in_seconds(app: Flask, events: EventStream) -> None:
    expected = r"@stream\(retry=...\) is in seconds now: 1500 read as 1.5 s; set 1.5"
    with pytest.warns(DeprecationWarning, match=expected) as caught:

        @app.get("/old")
        @stream(retry=1500)
        def old() -> t.Any:
            return events.subscribe("a")

    assert caught[0].filename == __file__

    @app.get("/new")
    @stream(retry=0.5)
    def new() -> t.Any:
        return events.subscribe("a")

    client = app.test_client()
    for path, sent in (("/old", b"retry: 1500\n"), ("/new", b"retry: 500\n")):
        with client.get(path, buffered=False) as rv:
            assert next(rv.response).startswith(sent)
        assert client.get(f"{path}?transport=poll").json["retry"] == int(sent[7:-1])


def test_presence_and_rewind_have_app_wide_defaults() -> None:
    config = {
        **DEFAULTS,
        "EVENTSTREAM_PRESENCE": True,
        "EVENTSTREAM_REWIND": 3,
        "EVENTSTREAM_NAMESPACES": {"quiet.": {"presence": False}, "p.": {"rewind": 1}},
    }
    settings = Settings(config)
    assert settings.channel("news")[3:] == (True, 3)
    assert settings.channel("quiet.1")[3:] == (False, 3)
    assert settings.channel("p.1")[3:] == (True, 1)
    assert Settings(DEFAULTS).channel("news")[3:] == (False, 0)  # as before


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
