"""A worker's own events reach its clients without the Redis round trip
back through its listener (see flask_eventstream/backends/redis/own.py),
and never out of order, twice, or past an event of another worker.
"""

from __future__ import annotations

import threading
import typing as t
import uuid

import pytest
from conftest import RedisServer
from flask import Flask

from flask_eventstream import EventStream
from flask_eventstream.subscription import Subscription

pytestmark = pytest.mark.redis


def workers(redis_server: RedisServer, count: int) -> list[tuple[Flask, EventStream]]:
    """``count`` apps on one Redis store: each stands for a worker, with a
    listener of its own.
    """
    prefix = f"own-{uuid.uuid4().hex[:8]}:"
    found = []
    for n in range(count):
        app = Flask(f"worker{n}")
        app.config["EVENTSTREAM_BACKEND"] = redis_server.url
        app.config["EVENTSTREAM_REDIS_PREFIX"] = prefix
        found.append((app, EventStream(app)))
    return found


def subscribe(app: Flask, events: EventStream, *channels: str) -> Subscription:
    with app.app_context():
        sub = events.subscribe(*channels, last_event_id=None)
    sub.open()
    return sub


def publish(app: Flask, events: EventStream, channel: str, data: str) -> str:
    with app.app_context():
        return t.cast(str, events.publish(channel, data).id)


def received(sub: Subscription, count: int) -> list[tuple[str, str]]:
    """Wait (bounded) for ``count`` events; return (id, data) of each."""
    found: list[tuple[str, str]] = []
    for _ in range(200):
        if len(found) >= count:
            break
        fresh = sub.wait(0.05)
        assert fresh is not None, "the subscription ended"
        found.extend((r.event.id or "", r.event.data) for r in fresh)
    return found


def test_own_events_arrive_with_the_listener_deaf_and_never_past_anothers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (app, events), (other, other_events) = workers(redis_server, 2)
    sub = subscribe(app, events, "room")
    first = publish(app, events, "room", "first")
    assert received(sub, 1) == [(first, "first")]
    listener = events.hub_for(app).backend.listener  # type: ignore[attr-defined]
    # The worker's pub/sub messages are lost from here on (as when Redis
    # drops a slow subscriber): only the publisher can deliver.
    monkeypatch.setattr(listener, "handle", lambda replies: None)
    mine = publish(app, events, "room", "mine")
    fresh = sub.wait(0)  # no wait: delivered before publish returned
    assert fresh is not None and [r.event.id for r in fresh] == [mine]
    # Another worker's event comes between: the next own event must wait
    # for it, not overtake it.
    theirs = publish(other, other_events, "room", "theirs")
    after = publish(app, events, "room", "after")
    assert sub.wait(0.2) == []
    # The listener hears again, reconnects, and reads what it missed from
    # the stream: both, in order, and nothing twice.
    monkeypatch.undo()
    redis_server.client().client_kill_filter(_type="pubsub")
    assert received(sub, 2) == [(theirs, "theirs"), (after, "after")]
    last = publish(app, events, "room", "last")
    assert received(sub, 1) == [(last, "last")]
    assert sub.wait(0.2) == []


def test_concurrent_publishers_in_two_workers_deliver_once_in_order(
    redis_server: RedisServer,
) -> None:
    """Threads of two workers publish on two channels at once; subscriptions
    of one channel and of both, in each worker, get every event once, in id
    order (a shortcut taken past an event still on its way would skip it).
    """
    pair = workers(redis_server, 2)
    subs = {
        (n, channels): subscribe(app, events, *channels)
        for n, (app, events) in enumerate(pair)
        for channels in (("a",), ("b",), ("a", "b"))
    }
    sent: dict[str, list[str]] = {"a": [], "b": []}
    lock = threading.Lock()

    def publisher(app: Flask, events: EventStream, channel: str, tag: str) -> None:
        for n in range(100):  # 800 in all: within the queue of a and b
            id = publish(app, events, channel, f"{tag}{n}")
            with lock:
                sent[channel].append(id)

    threads = [
        threading.Thread(target=publisher, args=(*pair[n], channel, f"{n}{channel}"))
        for n in range(2)
        for channel in ("a", "b")
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()

    def key(id: str) -> tuple[int, int]:
        ms, seq, _ = id.split("-")
        return int(ms), int(seq)

    for (_, channels), sub in subs.items():
        expected = sorted((id for c in channels for id in sent[c]), key=key)
        got = [id for id, _ in received(sub, len(expected))]
        assert got == expected
        assert sub.wait(0.1) == []


def test_a_listened_channel_keeps_no_setup_state(redis_server: RedisServer) -> None:
    """Once a worker listens to a channel, only its cursor stays: the event
    its first subscription waited on for Redis's confirmation is let go (a
    worker may listen to thousands of channels, each an object more for the
    collector), and the channel still gets its events.
    """
    (app, events), (other, other_events) = workers(redis_server, 2)
    listener = events.hub_for(app).backend.listener  # type: ignore[attr-defined]
    channels = [f"setup-{n}" for n in range(20)]
    subs = [subscribe(app, events, channel) for channel in channels]
    try:
        assert listener.confirmed == {}
        assert len(listener.state.cursors) == len(channels) + 1  # and control
        ids = [publish(other, other_events, channel, channel) for channel in channels]
        for sub, channel, id_ in zip(subs, channels, ids, strict=True):
            assert received(sub, 1) == [(id_, channel)]
    finally:
        for sub in subs:
            sub.close()
    assert listener.confirmed == {}
    assert list(listener.state.cursors) == [listener.state.control]  # unlistened


def test_a_check_of_the_store_that_races_an_own_publish_resets_nothing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener checks the store while quiet: its newest key must not be
    below what the worker saw. A publish of this worker that lands between
    that read and the comparison advances what the worker saw past what the
    read found; that is no lost write, and must not start a new epoch (which
    would send every client of every worker a reset).
    """
    ((app, events),) = workers(redis_server, 1)
    sub = subscribe(app, events, "quiet")
    first = publish(app, events, "quiet", "first")
    assert received(sub, 1) == [(first, "first")]
    backend = events.hub_for(app).backend
    state, recovery = backend.state, backend.recovery  # type: ignore[attr-defined]
    epoch = state.epoch
    read = recovery.client.mget
    between: list[str] = []

    def read_then_publish(*keys: t.Any) -> t.Any:
        found = read(*keys)
        if not between:
            between.append("")  # (once: the publish may read too)
            between[0] = publish(app, events, "quiet", "between")
        return found

    monkeypatch.setattr(recovery.client, "mget", read_then_publish)
    recovery.check_store()
    assert between and state.epoch == epoch
    assert received(sub, 1) == [(between[0], "between")]
