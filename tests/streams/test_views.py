"""``@stream`` views through the Flask test client."""

from __future__ import annotations

import json
import re
import typing as t

import pytest
from conftest import publish
from flask import Flask
from flask import request
from flask.testing import FlaskClient

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import stream
from flask_eventstream.testing import iter_events
from flask_eventstream.testing import parse


def read_all(client: FlaskClient, url: str, **kwargs: t.Any) -> bytes:
    with client.get(url, buffered=False, **kwargs) as rv:
        return b"".join(rv.response)


def test_generator_view_items(app: Flask, events: EventStream) -> None:
    @app.get("/g")
    @stream(retry=1.0, headers={"X-Extra": "1"})
    def g() -> t.Any:
        yield Event("e", event="t")
        yield "text"
        yield b"data: raw\n\n"
        yield {"data": {"n": 1}, "event": "json"}
        yield {"data": "plain", "id": "9"}

    rv = app.test_client().get("/g")
    assert rv.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert rv.headers["Cache-Control"] == "no-store"
    assert rv.headers["X-Accel-Buffering"] == "no"
    assert rv.headers["X-Extra"] == "1"
    assert "Content-Length" not in rv.headers
    assert "Connection" not in rv.headers
    assert rv.data == (
        b"retry: 1000\n"
        b"event: t\ndata: e\n\n"
        b"data: text\n\n"
        b"data: raw\n\n"
        b'event: json\ndata: {"n": 1}\n\n'
        b"id: 9\ndata: plain\n\n"
    )


def test_generator_view_keeps_request_context(app: Flask, events: EventStream) -> None:
    @app.get("/who")
    @stream
    def who() -> t.Any:
        yield request.args["name"]

    assert parse(app.test_client().get("/who?name=ada").data) == [Event("ada", id="")]


def test_generator_view_error_is_logged_and_ends_the_stream(
    app: Flask, events: EventStream, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    @stream
    def boom() -> t.Any:
        yield "one"
        raise LookupError("boom")

    with app.test_client().get("/boom", buffered=False) as rv:
        chunks = iter(rv.response)
        assert next(chunks) + next(chunks) == b"retry: 3000\ndata: one\n\n"
        with pytest.raises(StopIteration):
            next(chunks)
    [record] = [r for r in caplog.records if "raised" in r.getMessage()]
    assert record.getMessage() == "the generator view /boom raised; its stream ends."
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


def test_heartbeat_while_generator_blocks(app: Flask, events: EventStream) -> None:
    import threading

    release = threading.Event()

    @app.get("/wait")
    @stream(heartbeat=0.05)
    def wait() -> t.Any:
        release.wait(5)
        yield "late"

    with app.test_client().get("/wait", buffered=False) as rv:
        chunks = iter(rv.response)
        assert next(chunks) == b"retry: 3000\n"
        assert next(chunks) == b":\n"  # the view still blocks: keep-alive
        assert next(chunks) == b":\n"
        release.set()
        rest = b"".join(chunks)
    assert rest.endswith(b"data: late\n\n")
    assert parse(b":\n:\n" + rest) == [Event("late", id="")]


def test_view_may_answer_204_to_stop_reconnects(
    app: Flask, events: EventStream
) -> None:
    @app.get("/bye")
    @stream
    def bye() -> t.Any:
        return "", 204

    assert app.test_client().get("/bye").status_code == 204


@pytest.mark.parametrize(
    ("value", "status", "body"),
    [
        ("job done", 200, b"job done"),
        (b"raw", 200, b"raw"),
        ({"state": "done"}, 200, b'{"state":"done"}\n'),
        (("gone", 410), 410, b"gone"),
    ],
    ids=["str", "bytes", "dict", "tuple"],
)
def test_a_view_may_return_what_any_flask_view_may(
    app: Flask, value: t.Any, status: int, body: bytes
) -> None:
    # As docs/streams.rst says ("any response"); a str was a 500.
    @app.get("/done")
    @stream
    def done() -> t.Any:
        return value

    answer = app.test_client().get("/done")
    assert (answer.status_code, answer.get_data()) == (status, body)


def test_view_returning_other_things_is_a_type_error(
    app: Flask, events: EventStream
) -> None:
    @app.get("/bad")
    @stream
    def bad() -> t.Any:
        return 42

    with pytest.raises(TypeError, match="must return a Subscription.* not int"):
        app.test_client().get("/bad")


def test_stream_options_are_checked() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        stream(heartbeat=0)
    with pytest.raises(ValueError, match="retry"):
        stream(retry=-5)


def test_announce_false_sends_no_id_block(app: Flask, events: EventStream) -> None:
    @app.get("/quiet/<channel>")
    @stream(announce=False)
    def quiet(channel: str) -> t.Any:
        return events.subscribe(channel)

    publish(app, events, "q", "old")
    with app.test_client().get("/quiet/q", buffered=False) as rv:
        chunks = iter(rv.response)
        # A retry: line alone: no block that a decoder could dispatch.
        assert next(chunks) == b"retry: 3000\n"
        live = publish(app, events, "q", "new")
        assert next(chunks) == f"id: {live.id}\ndata: new\n\n".encode()


def test_fresh_client_gets_head_id_then_live(
    app: Flask, events: EventStream, client: FlaskClient
) -> None:
    before = publish(app, events, "a", "old")
    with client.get("/sub/a", buffered=False) as rv:
        chunks = iter(rv.response)
        assert next(chunks) == f"retry: 3000\nid: {before.id}\n\n".encode()
        live = publish(app, events, "a", "new")
        assert next(chunks) == f"id: {live.id}\ndata: new\n\n".encode()


def test_resume_replays_after_cursor(
    app: Flask, events: EventStream, client: FlaskClient
) -> None:
    sent = [publish(app, events, "a", str(n)) for n in range(5)]
    with client.get(
        "/sub/a", buffered=False, headers={"Last-Event-ID": sent[1].id}
    ) as rv:
        got = iter_events(rv, timeout=2)
        assert [next(got).data for _ in range(3)] == ["2", "3", "4"]
        publish(app, events, "a", "5")
        assert next(got).data == "5"


def test_resume_from_query_parameter(
    app: Flask, events: EventStream, client: FlaskClient
) -> None:
    sent = [publish(app, events, "a", str(n)) for n in range(3)]
    with client.get(f"/sub/a?lastEventId={sent[0].id}", buffered=False) as rv:
        got = iter_events(rv, timeout=2)
        assert [next(got).id for _ in range(2)] == [sent[1].id, sent[2].id]


def test_multi_channel_resume_in_id_order(
    app: Flask, events: EventStream, client: FlaskClient
) -> None:
    start = publish(app, events, "x", "start")
    published = [
        publish(app, events, channel, f"{channel}{n}")
        for n in range(3)
        for channel in ("a", "b", "c")
    ]
    with client.get(
        "/sub/a,b", buffered=False, headers={"Last-Event-ID": start.id}
    ) as rv:
        got = iter_events(rv, timeout=2)
        expected = [e.data for e in published if e.data[0] in "ab"]
        assert [next(got).data for _ in expected] == expected


#: Cursors outside the id alphabet: from another SSE server, a proxy that
#: rewrote ids, another app that used the URL before.
UNREADABLE_CURSORS = [
    "1" * 65,
    "Garbage!",
    "with space",
    "\u00e9t\u00e9".encode().decode("latin-1"),
    "x" * 4096,
]


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        *((cursor, "malformed") for cursor in UNREADABLE_CURSORS),
        ("1-2-3-4", "malformed"),
        ("18446744073709551616-0-{epoch}", "malformed"),  # past 64 bits
        ("1-0", "epoch"),  # the id form of earlier versions
        ("1-0-zzz", "epoch"),  # another store's
        ("99999999999999-0-{epoch}", "unknown"),
    ],
)
def test_unusable_cursor_resets_then_goes_live(
    app: Flask, events: EventStream, client: FlaskClient, cursor: str, reason: str
) -> None:
    before = publish(app, events, "a", "before")
    epoch = (before.id or "").rsplit("-", 1)[1]
    cursor = cursor.replace("{epoch}", epoch)
    with client.get("/sub/a", buffered=False, headers={"Last-Event-ID": cursor}) as rv:
        assert rv.status_code == 200
        got = iter_events(rv, timeout=2)
        reset = next(got)
        assert reset.event == "eventstream-reset"
        assert json.loads(reset.data)["reason"] == reason
        assert len(json.loads(reset.data)["cursor"]) <= 64  # echoed, not whole
        live = publish(app, events, "a", "after")
        assert next(got) == Event("after", id=live.id)


def test_expired_cursor_resets(app: Flask) -> None:
    app.config["EVENTSTREAM_HISTORY"] = 3
    events = EventStream(app)

    @app.get("/s")
    @stream
    def s() -> t.Any:
        return events.subscribe("a")

    sent = [publish(app, events, "a", str(n)) for n in range(6)]
    with app.test_client().get(
        "/s", buffered=False, headers={"Last-Event-ID": sent[1].id}
    ) as rv:
        reset = next(iter_events(rv, timeout=2))
    assert reset.event == "eventstream-reset"
    assert json.loads(reset.data)["reason"] == "expired"
    assert reset.id == sent[-1].id
    # Still within the kept history: a normal replay.
    with app.test_client().get(
        "/s", buffered=False, headers={"Last-Event-ID": sent[2].id}
    ) as rv:
        got = iter_events(rv, timeout=2)
        assert [next(got).data for _ in range(3)] == ["3", "4", "5"]


@pytest.mark.parametrize(
    ("url", "headers", "status", "message"),
    [
        ("/sub/secret", {}, 403, b"Not allowed"),
        ("/sub/a,secret", {}, 403, b"Not allowed"),
        ("/sub/bad%20name", {}, 400, b"Invalid channel"),
        ("/sub/" + ",".join(f"c{n}" for n in range(33)), {}, 400, b"MAX_CHANNELS"),
        *(
            (f"/sub/a?transport={transport}", {"Last-Event-ID": cursor}, 400, b"cursor")
            for transport in ("poll", "longpoll")
            for cursor in UNREADABLE_CURSORS
        ),
        ("/sub/a?transport=poll&lastEventId=1-0%00", {}, 400, b"cursor"),
        ("/sub/a?transport=carrier-pigeon", {}, 400, b"Unknown transport"),
    ],
)
def test_bad_requests_are_clear_errors(
    client: FlaskClient, url: str, headers: dict[str, str], status: int, message: bytes
) -> None:
    rv = client.get(url, headers=headers)
    assert rv.status_code == status
    assert message in rv.data


def test_builtin_endpoint_needs_authorize(app: Flask, events: EventStream) -> None:
    rv = app.test_client().get("/events/news")
    assert rv.status_code == 403
    assert b"authorize" in rv.data


def test_builtin_endpoint_can_be_turned_off() -> None:
    app = Flask("off")
    app.config["EVENTSTREAM_URL_PREFIX"] = None
    EventStream(app)
    client = app.test_client()
    assert client.get("/events/news").status_code == 404
    with app.test_request_context():
        from flask import url_for

        assert url_for("eventstream.static", filename="eventstream.js").endswith(
            "/eventstream.js"
        )


def test_generator_view_iterating_a_subscription_ends_with_the_stream(
    app: Flask, events: EventStream
) -> None:
    import threading

    from flask_eventstream import signals

    @app.get("/wrapped")
    @stream
    def wrapped() -> t.Any:
        for event in events.subscribe("a"):
            yield Event(event.data.upper(), id=event.id)

    connected = threading.Event()
    with signals.client_connected.connected_to(lambda *a, **k: connected.set(), app):
        with app.test_client().get("/wrapped", buffered=False) as rv:
            chunks = iter(rv.response)
            # The head waited for the subscription: the opening announces
            # where it starts, as a returned subscription's does.
            opening = next(chunks)
            assert connected.is_set()
            match = re.fullmatch(rb"retry: 3000\nid: ([0-9a-z-]+)\n\n", opening)
            assert match is not None, opening
            sent = publish(app, events, "a", "hi")
            assert next(chunks) == f"id: {sent.id}\ndata: HI\n\n".encode()
    # A client that left before that event resumes from the announced id,
    # and gets it.
    resumed = app.test_client().get(
        "/wrapped", headers={"Last-Event-ID": match[1].decode()}, buffered=False
    )
    with resumed:
        chunks = iter(resumed.response)
        assert next(chunks) == b"retry: 3000\n"  # a cursor: nothing to announce
        assert next(chunks) == f"id: {sent.id}\ndata: HI\n\n".encode()
    # Closing the stream closed the subscription the view was waiting on.
    with app.app_context():
        assert events.stats()["connections"] == 0
