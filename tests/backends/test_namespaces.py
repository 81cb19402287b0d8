"""Namespaces: ``EVENTSTREAM_NAMESPACES`` gives the channels that start with
a prefix their own history, history expiry, event size, presence and rewind;
the longest prefix wins; a bad one is refused at ``init_app`` with its name.
``EVENTSTREAM_PRESENCE`` and ``EVENTSTREAM_REWIND`` are the app-wide defaults
a namespace overrides.
"""

from __future__ import annotations

import json
import typing as t
import uuid

import pytest
from clients import RawStream
from conftest import RedisServer
from conftest import serve
from conftest import Server
from flask import Flask

from flask_eventstream import EventStream
from flask_eventstream import stream
from flask_eventstream.testing import check_delivery

NAMESPACES = {
    "user.": {"history": 2, "history_ttl": 60},
    "user.vip.": {"history": 50},
    "prices.": {"rewind": 1},
    "tiny.": {"max_event_bytes": 100},
    "big.": {"max_event_bytes": 4 * 1024 * 1024},
}


def make_app(namespaces: t.Any = NAMESPACES, **config: t.Any) -> Flask:
    app = Flask(__name__)
    app.testing = True
    app.config["EVENTSTREAM_NAMESPACES"] = namespaces
    app.config.update(config)
    events = EventStream(app)

    @app.get("/s/<channel>")
    @stream
    def s(channel: str) -> t.Any:
        return events.subscribe(channel)

    return app


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [
        (["user."], "must be a dict of channel-name prefix"),
        ({"": {}}, r"NAMESPACES\[''\]: a namespace is the start of channel names"),
        ({"user/": {}}, r"NAMESPACES\['user/'\]: a namespace is the start"),
        ({"user.": 50}, r"NAMESPACES\['user.'\] must be a dict of settings"),
        ({"user.": {"histroy": 5}}, "unknown setting 'histroy'; a namespace may set"),
        ({"user.": {"history": 0}}, r"\['user.'\].history must be a whole number"),
        ({"user.": {"history_ttl": -1}}, "history_ttl must be a positive number"),
        ({"a.": {"max_event_bytes": "1M"}}, "max_event_bytes must be a whole number"),
        ({"a.": {"presence": "yes"}}, "presence must be True or False"),
        ({"a.": {"rewind": 5000}}, "rewind must be a whole number from 0 to 1000"),
    ],
)
def test_bad_namespaces_are_refused_at_init_app(
    namespaces: t.Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_app(namespaces)


def test_the_longest_prefix_wins_and_others_use_the_global_settings() -> None:
    app = make_app(EVENTSTREAM_HISTORY=7)
    settings = app.extensions["eventstream"].hub_for(app).settings
    assert settings.channel("user.vip.7").history == 50
    assert settings.channel("user.vip.7").history_ttl is None  # not inherited
    assert settings.channel("user.7").history == 2
    assert settings.channel("users").history == 7  # a prefix, not a word
    assert settings.channel("news") == settings.default


def test_each_namespace_has_its_own_event_size() -> None:
    app = make_app()
    events: EventStream = app.extensions["eventstream"]
    with app.app_context():
        events.publish("tiny.a", "x" * 50)
        with pytest.raises(ValueError, match=r"max_event_bytes of 'tiny.a' \(100"):
            events.publish("tiny.a", "x" * 200)
        events.publish("big.a", "x" * (2 * 1024 * 1024))
        with pytest.raises(ValueError, match="more than the max_event_bytes"):
            events.publish("news", "x" * (2 * 1024 * 1024))


def test_memory_history_per_namespace() -> None:
    app = make_app()
    events: EventStream = app.extensions["eventstream"]
    with app.app_context():
        short = [events.publish("user.1", str(n)).id for n in range(4)]
        long = [events.publish("user.vip.1", str(n)).id for n in range(4)]
    client = app.test_client()

    def poll(channel: str, cursor: str) -> dict[str, t.Any]:
        url = f"/s/{channel}?transport=poll&lastEventId={cursor}"
        return t.cast(dict[str, t.Any], client.get(url).json)

    # Two kept of user.1: a cursor before them cannot be resumed from.
    assert poll("user.1", short[0]).get("reset") is True
    assert [e["id"] for e in poll("user.1", short[1])["events"]] == short[2:]
    assert [e["id"] for e in poll("user.vip.1", long[0])["events"]] == long[1:]


server = serve(backends=["memory", "redis"], config={"NAMESPACES": NAMESPACES})


def test_a_namespace_rewinds_by_default(server: Server) -> None:
    ids = server.publish("prices.btc", "{n}", count=3)
    stream = RawStream(server.url, "/stream/prices.btc")
    got = stream.open()
    live = server.publish("prices.btc", "live")
    got += stream.events(1)
    stream.close()
    check_delivery(ids[-1:] + live, got)
    # Elsewhere no rewind, unless asked for.
    server.publish("news", "old")
    other = RawStream(server.url, "/stream/news")
    assert other.open() == []
    other.close()


def test_redis_keeps_and_expires_history_per_namespace(
    redis_server: RedisServer,
) -> None:
    prefix = f"nr{uuid.uuid4().hex[:6]}:"
    config = {"NAMESPACES": NAMESPACES, "BACKEND": redis_server.url}
    srv = Server(config={**config, "REDIS_PREFIX": prefix}).start()
    try:
        srv.publish("user.5", count=400)
        srv.publish("news", count=400)
    finally:
        srv.stop()
    redis = redis_server.client()
    # MAXLEN ~ trims whole nodes of entries: about the history, never all.
    assert redis.xlen(f"{prefix}stream:user.5") < 200
    assert redis.xlen(f"{prefix}stream:news") == 400
    assert 0 < redis.pttl(f"{prefix}stream:user.5") <= 60_000
    assert redis.pttl(f"{prefix}stream:news") == -1  # kept: no global expiry


#: App-wide presence and rewind, and namespaces that override each.
DEFAULTS = {
    "PRESENCE": True,
    "REWIND": 2,
    "NAMESPACES": {
        "quiet.": {"presence": False, "rewind": 0},
        "prices.": {"rewind": 1},
    },
}


defaults = serve(backends=["memory", "redis"], config=DEFAULTS)


def test_the_app_wide_rewind_and_a_namespace_s_own(defaults: Server) -> None:
    for channel, rewound in (("news", 2), ("prices.eth", 1), ("quiet.x", 0)):
        ids = defaults.publish(channel, "{n}", count=3)
        stream = RawStream(defaults.url, f"/stream/{channel}")
        got = stream.open()
        live = defaults.publish(channel, "live")
        got += stream.events(1)
        stream.close()
        check_delivery(ids[len(ids) - rewound :] + live, got)
    # A request still asks for its own number.
    asked = RawStream(defaults.url, "/stream/news?rewind=0")
    assert asked.open() == []
    asked.close()
    assert "Unknown configuration key" not in defaults.output()


def test_the_app_wide_presence_and_a_namespace_that_turns_it_off(
    defaults: Server,
) -> None:
    lobby, quiet = f"lobby{uuid.uuid4().hex[:6]}", f"quiet.{uuid.uuid4().hex[:6]}"
    watcher = RawStream(defaults.url, f"/stream/{lobby},{quiet}")
    assert watcher.open() == []
    ada = RawStream(defaults.url, f"/stream/{quiet},{lobby}?user=ada")
    ada.open()
    (joined,) = watcher.events(1)
    assert (joined.event, json.loads(joined.data)) == (
        "eventstream-join",
        {"member": "ada"},
    )
    marks = defaults.publish(quiet, "mark") + defaults.publish(lobby, "mark")
    # One join, on the lobby: quiet. announces nothing, before or after.
    assert [e.id for e in watcher.events(2)] == marks
    ada.close()
    watcher.close()
