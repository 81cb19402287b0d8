"""Subscriber tokens: ``events.token(*channels, expires_in=)`` lets a client
that sends no cookie subscribe to the channels it names without
``authorize``; a tampered or expired token is a 403 that says why; a stream
the token let in ends when it expires.
"""

from __future__ import annotations

import html
import time
import typing as t

import httpx
import pytest
from clients import RawStream
from conftest import Server
from flask import Flask
from itsdangerous import URLSafeSerializer

from flask_eventstream import EventStream
from flask_eventstream import stream


def make_app(secret: str | None = "s3cret", *, authorize: bool = False) -> Flask:
    app = Flask(__name__)
    app.testing = True
    app.config["SECRET_KEY"] = secret
    events = EventStream(app)
    if authorize:
        events.authorize(lambda channel: channel == "public")

    @app.get("/mine/<channels>")
    @stream
    def mine(channels: str) -> t.Any:
        return events.subscribe(*channels.split(","))

    return app


def token(app: Flask, *channels: str, expires_in: float = 3600) -> str:
    events: EventStream = app.extensions["eventstream"]
    return events.token(*channels, expires_in=expires_in)


def poll(app: Flask, url: str, **headers: str) -> t.Any:
    sep = "&" if "?" in url else "?"
    return app.test_client().get(f"{url}{sep}transport=poll", headers=headers)


def said(answer: t.Any) -> str:
    """The message of an error page, as a person reads it."""
    return html.unescape(answer.text)


def test_the_builtin_endpoint_admits_a_token_without_authorize() -> None:
    app = make_app()
    signed = token(app, "room.1", "room.2")
    assert poll(app, f"/events/room.1?token={signed}").status_code == 200
    bearer = poll(app, "/events/room.2", Authorization=f"Bearer {signed}")
    assert bearer.status_code == 200
    other = poll(app, f"/events/room.3?token={signed}")
    assert other.status_code == 403
    assert "The token does not name channel 'room.3'" in said(other)
    assert poll(app, "/events/room.1").status_code == 403  # no token, no authorize


def test_a_token_passes_channels_authorize_refuses_and_only_those() -> None:
    app = make_app(authorize=True)
    signed = token(app, "private")
    assert poll(app, f"/mine/private,public?token={signed}").status_code == 200
    assert poll(app, f"/events/private?token={signed}").status_code == 200
    refused = poll(app, f"/mine/private,other?token={signed}")
    assert refused.status_code == 403 and "'other'" in said(refused)


def forged(secret: str, payload: t.Any) -> str:
    serializer = URLSafeSerializer(secret, salt="flask-eventstream.subscribe")
    return t.cast(str, serializer.dumps(payload))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda good: good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
         "signature does not match"),
        (lambda good: good.replace(".", "x.", 1), "signature does not match"),
        (lambda good: forged("another key", {"c": ["room.1"], "x": 4e9}),
         "signature does not match"),
        (lambda good: forged("s3cret", {"c": ["room.1"], "x": time.time() - 60}),
         "The token expired 60 seconds ago"),
        (lambda good: forged("s3cret", ["room.1"]), "it does not name channels"),
        (lambda good: "x" * 9000, "longer than 8192"),
    ],
    ids=["tampered", "cut", "other-key", "expired", "no-channels", "huge"],
)  # fmt: skip
def test_a_bad_token_is_a_403_with_its_reason(
    make: t.Callable[[str], str], reason: str
) -> None:
    app = make_app(authorize=True)
    bad = make(token(app, "room.1"))
    for url in (f"/events/room.1?token={bad}", f"/mine/public?token={bad}"):
        answer = poll(app, url)
        assert answer.status_code == 403, url
        assert reason in said(answer)
    # The same refusal in a header; a session key cannot pass for a token.
    assert poll(app, "/events/room.1", Authorization=f"Bearer {bad}").status_code == 403


def test_a_rotated_key_still_reads_its_tokens() -> None:
    old = make_app("old key")
    signed = token(old, "room.1")
    app = make_app("new key")
    app.config["SECRET_KEY_FALLBACKS"] = ["old key"]
    assert poll(app, f"/events/room.1?token={signed}").status_code == 200
    assert (
        poll(make_app("new key"), f"/events/room.1?token={signed}").status_code == 403
    )


def test_token_arguments_are_checked() -> None:
    app = make_app()
    for channels, lifetime, message in [
        ((), 60, "at least one channel"),
        (("a b",), 60, "Invalid channel name"),
        (("a",), 0, "expires_in must be positive"),
        (("a",), float("inf"), "expires_in must be positive"),
        (("a",), True, "expires_in must be positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            token(app, *channels, expires_in=lifetime)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        token(make_app(None), "a")


@pytest.fixture(scope="module")
def server() -> t.Iterator[Server]:
    srv = Server("gevent").start()
    yield srv
    srv.stop()


def server_token(server: Server, channels: str, expires_in: float = 3600) -> str:
    answer = httpx.get(
        f"{server.url}/token",
        params={"channels": channels, "expires_in": str(expires_in)},
        timeout=5,
    )
    answer.raise_for_status()
    return answer.text


def test_a_stream_ends_when_its_token_expires(server: Server) -> None:
    # serverapp's authorize refuses every "secret" channel: only the token
    # lets this stream in.
    signed = server_token(server, "secret-a", expires_in=2)
    path = f"/stream/secret-a?token={signed}"
    stream = RawStream(server.url, path, timeout=10)
    assert stream.open() == []
    (sent,) = server.publish("secret-a")
    (event,) = stream.events(1)
    assert event.id == sent
    started = time.monotonic()
    tail = stream.read_to_end(timeout=10)
    ended = time.monotonic() - started
    stream.close()
    assert ended < 4, ended  # at the expiry (2 s), seen within a monitor round
    assert tail.rstrip().splitlines()[-1].startswith(b"retry: ")
    again = httpx.get(f"{server.url}{path}", timeout=5)
    assert again.status_code == 403
    assert "The token expired" in html.unescape(again.text)
    # On polls too, and a long-poll waits no longer than its token.
    refused = httpx.get(f"{server.url}{path}&transport=poll", timeout=5)
    assert refused.status_code == 403


def test_a_long_poll_ends_with_its_token(server: Server) -> None:
    signed = server_token(server, "secret-b", expires_in=1.5)
    started = time.monotonic()
    answer = httpx.get(
        f"{server.url}/stream/secret-b",
        params={"token": signed, "transport": "longpoll", "timeout": "20"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["events"] == []
    assert time.monotonic() - started < 4
