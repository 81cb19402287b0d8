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
from conftest import RedisServer
from conftest import serve
from conftest import Server
from flask import Flask
from flask import request
from itsdangerous import URLSafeSerializer

from flask_eventstream import EventStream
from flask_eventstream import stream


def make_app(
    secret: str | None = "s3cret", *, authorize: bool = False, redis: str = ""
) -> Flask:
    app = Flask(__name__)
    app.testing = True
    app.config["SECRET_KEY"] = secret
    if redis:
        app.config["EVENTSTREAM_BACKEND"] = redis
        app.config["EVENTSTREAM_REDIS_PREFIX"] = "tokens:"
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
    # Several channels: every one must be named by the token.
    both = poll(app, f"/events/room.1,room.2?token={signed}")
    assert both.status_code == 200, said(both)
    one_more = poll(app, f"/events/room.1,room.3?token={signed}")
    assert one_more.status_code == 403
    assert "The token does not name channel 'room.3'" in said(one_more)
    empty = poll(app, f"/events/room.1,?token={signed}")
    assert empty.status_code == 400 and "Invalid channel name ''" in said(empty)


def test_a_token_passes_channels_authorize_refuses_and_only_those() -> None:
    app = make_app(authorize=True)
    signed = token(app, "private")
    assert poll(app, f"/mine/private,public?token={signed}").status_code == 200
    assert poll(app, f"/events/private?token={signed}").status_code == 200
    refused = poll(app, f"/mine/private,other?token={signed}")
    assert refused.status_code == 403 and "'other'" in said(refused)


def forged(secret: str, payload: t.Any) -> str:
    serializer = URLSafeSerializer(secret, salt="flask-eventstream.subscribe")
    return "eventstream-1." + t.cast(str, serializer.dumps(payload))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda good: good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
         "signature does not match"),
        (lambda good: good[:-10], "signature does not match"),
        (lambda good: forged("another key", {"c": ["room.1"], "x": 4e9}),
         "signature does not match"),
        (lambda good: forged("s3cret", {"c": ["room.1"], "i": 0, "x": time.time() - 60}),  # noqa: E501
         "The token expired 60 seconds ago"),
        (lambda good: forged("s3cret", ["room.1"]), "it does not name channels"),
        (lambda good: "eventstream-1." + "x" * 9000, "longer than 8192"),
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
        (("a",), 31 * 24 * 3600, "at most 2,592,000"),
        (("a",), True, "expires_in must be positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            token(app, *channels, expires_in=lifetime)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        token(make_app(None), "a")


@pytest.mark.parametrize("secret", [None, "a secret key of 32 characters..."])
def test_a_value_that_is_not_a_subscriber_token_is_left_to_authorize(
    secret: str | None,
) -> None:
    """An app's own bearer tokens (or another ``?token=``) are its business:
    ``authorize`` judges them; without SECRET_KEY, no 500.
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = secret
    events = EventStream(app)

    @events.authorize
    def authorize(channel: str) -> bool:
        own = "Bearer app-own-token", "app-own-token"
        got = request.headers.get("Authorization"), request.args.get("token")
        return any(value in own for value in got)

    client = app.test_client()
    for url, headers in [
        ("/events/room?token=app-own-token", {}),
        ("/events/room", {"Authorization": "Bearer app-own-token"}),
    ]:
        answer = client.get(
            url + "&transport=poll" if "?" in url else url + "?transport=poll",
            headers=headers,
        )
        assert answer.status_code == 200, (url, headers, said(answer))
    if secret is not None:  # ours in the header, the app's own in the URL
        ours = token(app, "room")
        mixed = client.get(
            "/events/room?transport=poll&token=whatever",
            headers={"Authorization": f"Bearer {ours}"},
        )
        assert mixed.status_code == 200, said(mixed)
    for url, headers in [
        ("/events/room?transport=poll&token=whatever", {}),
        ("/events/room?transport=poll", {"Authorization": "Bearer whatever"}),
        ("/events/room?transport=poll", {"Authorization": "Bearer eventstream-1.x"}),
    ]:
        answer = client.get(url, headers=headers)
        if secret is None or "whatever" in str(headers) + url:
            # Not ours (or none can be without a key): authorize said no.
            assert answer.status_code == 403, said(answer)
            assert "Not allowed to subscribe" in said(answer)
        else:  # ours by its prefix, and broken: said so
            assert answer.status_code == 403
            assert "The token is invalid" in said(answer)


def test_a_short_secret_key_is_a_warning_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="flask_eventstream"):
        make_app("dev")
    assert "SECRET_KEY is 3 characters long" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flask_eventstream"):
        make_app("k" * 32)
        make_app(None)
    assert "SECRET_KEY" not in caplog.text


def test_close_channel_revokes_the_tokens_issued_before_it() -> None:
    """A token issued before ``close_channel(ch)`` admits ``ch`` no more; one
    issued after it does; its other channels are untouched.
    """
    app = make_app("k" * 32)
    events: EventStream = app.extensions["eventstream"]
    before = token(app, "room.1", "room.2")
    assert poll(app, f"/events/room.1?token={before}").status_code == 200
    events.close_channel("room.1")
    refused = poll(app, f"/events/room.1?token={before}")
    assert refused.status_code == 403
    assert "closed after the token was issued" in said(refused)
    assert poll(app, f"/mine/room.1?token={before}").status_code == 200  # no authorize
    assert poll(app, f"/events/room.2?token={before}").status_code == 200
    after = token(app, "room.1")
    assert poll(app, f"/events/room.1?token={after}").status_code == 200


server = serve()


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
    server.wait_ended("secret-a", "expired")
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


def test_close_channel_revokes_tokens_on_every_worker(
    redis_server: RedisServer,
) -> None:
    """Two apps on one Redis stand for two workers (or hosts): a token issued
    by one before the other closes the channel admits it on neither.
    """
    apps = [make_app("k" * 32, redis=redis_server.url) for _ in range(2)]
    closer: EventStream = apps[1].extensions["eventstream"]
    before = token(apps[0], "room.9")
    assert poll(apps[0], f"/events/room.9?token={before}").status_code == 200
    closer.close_channel("room.9")
    for app in apps:
        refused = poll(app, f"/events/room.9?token={before}")
        assert refused.status_code == 403
        assert "closed after the token was issued" in said(refused)
    after = token(apps[1], "room.9")
    assert poll(apps[0], f"/events/room.9?token={after}").status_code == 200


def test_a_token_client_that_reconnects_after_a_revoke_is_refused(
    redis_server: RedisServer,
) -> None:
    """The finding, through a real server on Redis: the token client's stream
    ends at the close, and its reconnection with the same token is a 403.
    """
    config = {"BACKEND": redis_server.url, "REDIS_PREFIX": "tok:"}
    srv = Server("gevent", config=config).start()
    try:
        signed = server_token(srv, "secret-room")
        path = f"/stream/secret-room?token={signed}"
        stream = RawStream(srv.url, path, timeout=10)
        assert stream.open() == []
        srv.http.post("/close", data={"channel": "secret-room"}, timeout=5)
        stream.read_to_end(timeout=5)  # ended by the close
        stream.close()
        srv.wait_ended("secret-room", "revoked")
        srv.publish("secret-room", "private-after-revoke")
        again = srv.http.get(path, timeout=5)
        assert again.status_code == 403
        assert "private-after-revoke" not in again.text
    finally:
        srv.stop()


def test_a_token_request_while_redis_is_down_is_a_pause_not_a_500() -> None:
    """Checking a token reads Redis: when it is down, a stream gets the
    pause every stream gets (200, a retry hint), a poll a 503 with a reason.
    """
    redis = RedisServer().start()
    app = make_app("k" * 32, redis=redis.url)
    signed = token(app, "room.3")
    redis.stop()
    client = app.test_client()
    for url in ("/events/room.3", "/mine/room.3"):
        answer = poll(app, f"{url}?token={signed}")
        assert answer.status_code == 503, said(answer)
        assert "Events cannot be read now" in said(answer)
        assert answer.headers["Retry-After"] == "2"
        with client.get(f"{url}?token={signed}") as streamed:
            assert streamed.status_code == 200
            assert b": the backend is unavailable" in streamed.data
