"""Rewind: a client without a cursor first gets the last N stored events of
its channels, in id order, then live ones; on every transport, against a
real gunicorn gevent server (and both backends in the backend tests).
"""

from __future__ import annotations

import httpx
import pytest
from clients import RawStream
from conftest import serve
from conftest import Server

from flask_eventstream.testing import check_delivery
from flask_eventstream.wire import Parser

server = serve(backends=["memory", "redis"])


def test_a_stream_rewinds_then_goes_live(server: Server) -> None:
    ids = server.publish("price", "{n}", count=5)
    stream = RawStream(server.url, "/stream/price?rewind=2")
    got = stream.open()
    assert [e.id for e in got] == ids[-2:]
    live = server.publish("price", "live")
    got += stream.events(1)
    stream.close()
    check_delivery(ids[-2:] + live, got)


def test_rewind_1_is_the_latest_price(server: Server) -> None:
    (last,) = server.publish("btc", "42000")[-1:]
    stream = RawStream(server.url, "/events/btc?rewind=1")
    (latest,) = stream.open()
    stream.close()
    assert (latest.id, latest.data) == (last, "42000")


def test_rewind_across_channels_is_in_id_order(server: Server) -> None:
    a = server.publish("ra", "a{n}", count=3)
    b = server.publish("rb", "b{n}", count=3)
    c = server.publish("ra", "c{n}", count=2)
    stream = RawStream(server.url, "/stream/ra,rb?rewind=4")
    got = stream.open()
    stream.close()
    assert [e.id for e in got] == (a + b + c)[-4:]


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_polls_rewind_too(server: Server, transport: str) -> None:
    ids = server.publish(f"p-{transport}", "{n}", count=4)
    answer = httpx.get(
        f"{server.url}/stream/p-{transport}",
        params={"transport": transport, "rewind": "3", "timeout": "1"},
        timeout=10,
    ).json()
    assert [e["id"] for e in answer["events"]] == ids[-3:]
    assert answer["lastEventId"] == ids[-1]


def test_with_a_cursor_rewind_is_ignored(server: Server) -> None:
    ids = server.publish("rc", "{n}", count=4)
    stream = RawStream(server.url, "/stream/rc?rewind=4", {"Last-Event-ID": ids[2]})
    got = stream.open(ids[2])
    stream.close()
    assert [e.id for e in got] == ids[3:]


def test_rewind_is_bounded_by_the_history_and_checked(server: Server) -> None:
    stream = RawStream(server.url, "/stream/never-published?rewind=50")
    assert stream.open() == []
    stream.close()
    for bad in ("-1", "1001", "x", "1e3"):
        rv = httpx.get(f"{server.url}/stream/rc?rewind={bad}", timeout=5)
        assert rv.status_code == 400 and "rewind" in rv.text


#: The view kinds that serve a subscription: returned from a view, iterated
#: by a generator view, the built-in endpoint.
VIEWS = ["/stream/", "/iterate/", "/events/"]


@pytest.mark.parametrize("view", VIEWS)
def test_a_stream_rewinds_every_event_asked_for_a_page_at_a_time(
    server: Server, view: str
) -> None:
    """100 events, more than one replay page (8 events with the default
    EVENTSTREAM_MAX_EVENT_BYTES): a stream sends all 100, as a poll does.
    """
    channel = f"many{view.strip('/')}"
    ids = server.publish(channel, "{n}", count=100)
    stream = RawStream(server.url, f"{view}{channel}?rewind=100")
    stream.read_head()
    stream.parser = Parser()
    got = stream.events(100)
    stream.close()
    assert [e.id for e in got] == ids
    assert [e.data for e in got] == [str(n) for n in range(100)]


@pytest.mark.parametrize("rewind", [7, 8, 12])
@pytest.mark.parametrize("transport", ["sse", "poll", "longpoll"])
def test_a_rewind_past_what_is_stored_sends_everything_stored(
    server: Server, transport: str, rewind: int
) -> None:
    """7 stored: ``?rewind=8`` and ``?rewind=12`` send the 7."""
    channel = f"seven-{transport}-{rewind}"
    ids = server.publish(channel, "{n}", count=7)
    if transport == "sse":
        stream = RawStream(server.url, f"/stream/{channel}?rewind={rewind}")
        stream.read_head()
        stream.parser = Parser()
        got = [e.id for e in stream.events(7)]
        # Nothing more comes: the next event is a live one.
        live = server.publish(channel, "live")
        got += [e.id for e in stream.events(1)]
        stream.close()
        assert got == ids + live
    else:
        answer = httpx.get(
            f"{server.url}/stream/{channel}",
            params={"transport": transport, "rewind": str(rewind), "timeout": "1"},
            timeout=10,
        ).json()
        assert [e["id"] for e in answer["events"]] == ids


def test_a_polled_rewind_is_bounded_in_bytes_and_loses_nothing(server: Server) -> None:
    """24 events of 400 KB (9.6 MB): a poll's rewind answers about a read's
    8 MiB, and the next poll brings the rest.
    """
    ids = server.publish("heavy", "x" * 400_000 + "{n}", count=24)
    url = f"{server.url}/stream/heavy"
    first = httpx.get(url, params={"transport": "poll", "rewind": "24"}, timeout=30)
    answer = first.json()
    got = [e["id"] for e in answer["events"]]
    assert 0 < len(got) < 24
    assert sum(len(e["data"]) for e in answer["events"][1:]) < 8 * 1024 * 1024
    rest = httpx.get(
        url,
        params={"transport": "poll", "lastEventId": answer["lastEventId"]},
        timeout=30,
    ).json()
    assert got + [e["id"] for e in rest["events"]] == ids
