"""The Python client, ``flask_eventstream.client.EventSource``, against a
real gunicorn gevent server: every event once, in order, across connections
cut at random; a reset surfaced; 204 and 403 stop it. And what httpx-sse
0.4.3, a common decoder, makes of the stream's opening.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import typing as t

import httpx
import pytest
from clients import Proxy
from conftest import Server
from httpx_sse import connect_sse
from sseclient import SSEClient

from flask_eventstream import Event
from flask_eventstream.client import EventSource
from flask_eventstream.client import RESET_EVENT
from flask_eventstream.client import StreamRefused
from flask_eventstream.testing import check_delivery


@pytest.fixture(scope="module")
def server() -> t.Iterator[Server]:
    srv = Server("gevent", config={"RETRY": 100}).start()
    yield srv
    srv.stop()


def collect(source: EventSource, count: int) -> list[Event]:
    got = []
    for event in source:
        got.append(event)
        if len(got) == count:
            break
    return got


def test_every_event_once_in_order_across_random_cuts(server: Server) -> None:
    proxy = Proxy(server.port)
    total = 300
    stop = threading.Event()
    published: list[str] = []
    cuts = 0

    def publish() -> None:
        for n in range(total):
            published.extend(server.publish("cuts", f"e{n}"))
            time.sleep(0.01)

    def cut() -> None:
        nonlocal cuts
        rng = random.Random(7)
        while not stop.wait(rng.uniform(0.1, 0.4)):
            cuts += proxy.cut()

    source = EventSource(f"{proxy.url}/stream/cuts", timeout=10)
    got: list[Event] = []
    reader = threading.Thread(target=lambda: got.extend(collect(source, total)))
    reader.start()
    while not got and source.status is None:
        time.sleep(0.01)  # the first connection is made: nothing is missed
    cutter = threading.Thread(target=cut)
    publisher = threading.Thread(target=publish)
    cutter.start()
    publisher.start()
    publisher.join(60)
    reader.join(60)
    stop.set()
    cutter.join(5)
    source.close()
    proxy.close()
    assert not reader.is_alive(), f"{len(got)} of {total}"
    check_delivery(published, got)
    assert [e.data for e in got] == [f"e{n}" for n in range(total)]
    assert cuts > 0 and source.reconnects > 0


def test_a_reset_is_surfaced(server: Server) -> None:
    (sent,) = server.publish("reset-me", "after")
    # An id of another store's epoch: the server cannot resume after it.
    stale = "1-0-zzzzzzzzzzzzz"
    with EventSource(f"{server.url}/stream/reset-me", last_event_id=stale) as source:
        events = iter(source)
        reset = next(events)
        assert reset.event == RESET_EVENT
        assert '"reason"' in reset.data
        (live,) = server.publish("reset-me", "live")
        assert next(events).id == live
    assert source.closed


def test_204_ends_the_iteration(server: Server) -> None:
    source = EventSource(f"{server.url}/gone")
    assert list(source) == []
    assert source.status == 204 and source.reconnects == 0


def test_403_stops_with_the_status_and_the_reason(server: Server) -> None:
    source = EventSource(f"{server.url}/stream/secret")
    with pytest.raises(StreamRefused) as refused:
        next(iter(source))
    assert refused.value.status == 403
    assert refused.value.message == "Not allowed to subscribe to 'secret'."


def test_close_from_another_thread_ends_the_iteration(server: Server) -> None:
    source = EventSource(f"{server.url}/stream/closing", timeout=5)
    done = threading.Event()

    def read() -> None:
        for _ in source:
            pass
        done.set()

    threading.Thread(target=read, daemon=True).start()
    while source.status is None:
        time.sleep(0.01)
    source.close()
    # At the next bytes: a heartbeat comes every 0.5 s.
    assert done.wait(5)


def test_a_server_that_goes_silent_is_left_after_the_timeout() -> None:
    # A server that takes the connection and never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    source = EventSource(f"http://127.0.0.1:{port}/stream/silent", timeout=0.5)
    source.retry = 10  # no server to say it: reconnect at once
    reader = threading.Thread(target=lambda: collect(source, 1), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while source.reconnects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    source.close()
    listener.close()
    for sock in accepted:
        sock.close()
    # It gave up on each silent connection after the timeout, and tried again.
    assert source.reconnects >= 2 and len(accepted) >= 3
    reader.join(5)
    assert not reader.is_alive()


def test_httpx_sse_with_a_cursor_gets_exactly_the_events(server: Server) -> None:
    first = server.publish("hs", "before")[0]
    ids = server.publish("hs", "n{n}", count=3, event="tick")
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        connect_sse(
            client, "GET", "/stream/hs", headers={"Last-Event-ID": first}
        ) as source,
    ):
        events = source.iter_sse()
        got = [next(events) for _ in ids]
    # No empty event first: the opening's retry: has no blank line of its own.
    assert [(e.id, e.event, e.data, e.retry) for e in got] == [
        (id, "tick", f"n{n}", 100 if n == 0 else None) for n, id in enumerate(ids)
    ]


def test_httpx_sse_without_a_cursor_sees_the_id_block_unless_turned_off(
    server: Server,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        # Documented: httpx-sse 0.4.3 dispatches the resume-id block as an
        # event with empty data, which a client skips (data == "").
        with connect_sse(client, "GET", "/stream/hq") as source:
            events = source.iter_sse()
            opening = next(events)
            assert (opening.event, opening.data) == ("message", "")
            (sent,) = server.publish("hq", "one")
            assert next(events).id == sent
        # @stream(announce=False): no such block.
        with connect_sse(client, "GET", "/quiet/hq") as source:
            events = source.iter_sse()
            (sent,) = server.publish("hq", "two")
            event = next(events)
            assert (event.id, event.data) == (sent, "two")


def test_sseclient_py_skips_the_id_block_and_reads_exactly_the_events(
    server: Server,
) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/stream/ssec") as response,
    ):
        # sseclient-py 1.9.0 does not dispatch a block without data.
        events = SSEClient(response.iter_bytes()).events()
        ids = server.publish("ssec", "n{n}", count=2, event="tick")
        got = [next(events) for _ in ids]
    assert [(e.id, e.event, e.data) for e in got] == [
        (id, "tick", f"n{n}") for n, id in enumerate(ids)
    ]
