"""The core against real servers: gunicorn's gevent worker (the target),
gunicorn's gthread worker and ``flask run``'s threaded server.
"""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest
from clients import RawStream
from conftest import Server
from httpx_sse import connect_sse

from flask_eventstream import Event
from flask_eventstream.testing import parse


def test_head_and_exact_bytes(server: Server) -> None:
    raw = RawStream(server.url, "/stream/bytes", {"Accept": "text/event-stream"})
    try:
        raw.read_head()
        assert raw.status == 200
        assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert raw.headers["cache-control"] == "no-store"
        assert raw.headers["x-accel-buffering"] == "no"
        assert "content-length" not in raw.headers
        opening = raw.read_body()  # sent at once, before any event
        assert re.fullmatch(rb"retry: 500\nid: \d+-\d+-[0-9a-z]+\n\n", opening), opening
        (sent,) = server.publish("bytes", "caf\u00e9\nline two", event="note")
        expected = f"id: {sent}\nevent: note\ndata: caf\u00e9\ndata: line two\n\n"
        assert raw.read_exactly(expected.encode()) == expected.encode()
        started = time.monotonic()
        assert raw.read_body() == b":\n"  # heartbeat: a comment, no blank line
        assert time.monotonic() - started < 2.0
    finally:
        raw.close()


def test_httpx_sse_client_receives_events(server: Server) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        connect_sse(client, "GET", "/stream/sse") as source,
    ):
        events = source.iter_sse()
        opening = next(events)  # httpx-sse reports the data-less opening block
        assert (opening.data, opening.retry) == ("", 500)
        ids = server.publish("sse", "n{n}", count=3, event="tick")
        got = [next(events) for _ in ids]
    assert [(e.id, e.event, e.data) for e in got] == [
        (id, "tick", f"n{n}") for n, id in enumerate(ids)
    ]


def test_generator_view_and_heartbeat_while_it_blocks(server: Server) -> None:
    raw = RawStream(server.url, "/slow?pause=1.2")
    try:
        body = raw.read_to_end(timeout=10)
    finally:
        raw.close()
    assert body.startswith(b"retry: 500\ndata: first\n\n:\n:\n")
    assert body.endswith(b":\ndata: second\n\n")


def test_clients_reconnecting_during_publishes_miss_nothing(server: Server) -> None:
    total, clients = 1000, 20
    ready = threading.Barrier(clients + 1, timeout=20)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def client(number: int) -> None:
        received: list[str] = []
        cursor: str | None = None
        first = True
        try:
            while len(received) < total:
                headers = {"Last-Event-ID": cursor} if cursor else {}
                raw = RawStream(server.url, "/stream/burst", headers)
                try:
                    # The opening: retry, and the id or the replayed events.
                    received += [e.data for e in raw.open(cursor or "")]
                    if first:
                        first = False
                        ready.wait()
                    # Leave after a different number of events each time.
                    quota = 17 + 13 * number + len(received) % 29
                    left = total - len(received)
                    for event in raw.events(min(quota, left)) if left else []:
                        received.append(event.data)
                    cursor = raw.parser.last_event_id
                finally:
                    raw.close()
        except BaseException as error:  # reported by the test below
            errors.append(error)
        results[number] = received

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    for batch in range(total // 10):
        server.publish("burst", f"{batch}.{{n}}", count=10)
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    expected = [f"{batch}.{n}" for batch in range(total // 10) for n in range(10)]
    for number in range(clients):
        assert results[number] == expected, number


def test_multi_channel_resume(server: Server) -> None:
    raw = RawStream(server.url, "/stream/mc-a,mc-b")
    assert raw.open() == []  # a fresh client: the opening has no event
    server.publish("mc-a", "a0")
    server.publish("mc-b", "b0")
    assert [e.data for e in raw.events(2)] == ["a0", "b0"]
    cursor = raw.parser.last_event_id
    raw.close()
    sent = []
    for n in range(1, 4):
        for channel in ("mc-a", "mc-c", "mc-b"):
            server.publish(channel, f"{channel[-1]}{n}")
            sent.append(f"{channel[-1]}{n}")
    again = RawStream(server.url, "/stream/mc-b,mc-a", {"Last-Event-ID": cursor})
    try:
        got = [e.data for e in again.events(6)]
    finally:
        again.close()
    assert got == [name for name in sent if name[0] in "ab"]


def test_expired_cursor_gives_reset(server: Server) -> None:
    first, *_ = server.publish("expiring", count=400)  # history keeps 300
    raw = RawStream(server.url, "/stream/expiring", {"Last-Event-ID": first})
    try:
        (reset,) = raw.events(1)
        server.publish("expiring", "fresh")
        (live,) = raw.events(1)
    finally:
        raw.close()
    assert reset.event == "eventstream-reset"
    assert json.loads(reset.data)["reason"] == "expired"
    assert live.data == "fresh"


def test_restart_with_old_cursor_does_not_hide_new_events() -> None:
    first = Server("gevent").start()
    try:
        raw = RawStream(first.url, "/stream/restart")
        assert raw.open() == []  # a fresh client: the opening has no event
        first.publish("restart", "before", count=5)
        raw.events(5)
        old_cursor = raw.parser.last_event_id
        raw.close()
    finally:
        first.stop()
    second = Server("gevent").start()
    try:
        raw = RawStream(second.url, "/stream/restart", {"Last-Event-ID": old_cursor})
        (reset,) = raw.events(1)
        ids = second.publish("restart", "after{n}", count=3)
        got = raw.events(3)
        raw.close()
    finally:
        second.stop()
    assert reset.event == "eventstream-reset"
    assert json.loads(reset.data)["reason"] == "epoch"  # another process's store
    assert [(e.id, e.data) for e in got] == [
        (id, f"after{n}") for n, id in enumerate(ids)
    ]


def test_500_clients_connect_and_leave(server: Server) -> None:
    streams = []
    try:
        for _ in range(500):
            streams.append(RawStream(server.url, "/stream/crowd"))
        for raw in streams:
            raw.read_head()
            assert raw.read_body().startswith(b"retry: 500\n")
        stats = server.stats()
        assert stats["channels"]["crowd"] == 500
        assert stats["connections"] >= 500
    finally:
        for raw in streams:
            raw.close()
    # Gone clients are found at the next heartbeat write (0.5 s here).
    # Every client of earlier tests has left too: nothing stays subscribed.
    stats = server.wait_for(lambda s: s["connections"] == 0, timeout=15)
    assert stats["channels"] == {}


def test_parse_matches_what_a_real_stream_carries(server: Server) -> None:
    raw = RawStream(server.url, "/count?n=4")
    try:
        body = raw.read_to_end()
    finally:
        raw.close()
    assert parse(body) == [Event(str(n), id=str(n)) for n in range(4)]


@pytest.mark.parametrize("path", ["/gone"])
def test_view_can_answer_204(server: Server, path: str) -> None:
    assert server.http.get(path, timeout=5).status_code == 204
