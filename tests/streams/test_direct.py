"""Direct writes: the publisher writes to a waiting stream's socket itself.

What a client receives is checked as raw bytes, chunk framing included: the
direct path frames each event as gunicorn frames a write, and a write the
kernel takes only in part is finished by the stream before anything else.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
from clients import chunk
from clients import RawStream
from conftest import RedisServer
from conftest import Server

from flask_eventstream import Event
from flask_eventstream.backends.redis.keys import Keys
from flask_eventstream.backends.redis.scripts import Append
from flask_eventstream.backends.redis.scripts import append_reply
from flask_eventstream.backends.redis.scripts import APPEND_SCRIPT
from flask_eventstream.ids import format_id


@pytest.fixture(scope="module", params=[True, False], ids=["direct", "off"])
def server(request: pytest.FixtureRequest) -> t.Iterator[Server]:
    # No heartbeat comes between the bytes a test expects.
    config = {"DIRECT_WRITES": request.param, "SEND_BUFFER": 4096, "HEARTBEAT": 60}
    with Server("gevent", config=config) as server:
        yield server


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_the_wire_bytes(
    server: Server, version: str, request: pytest.FixtureRequest
) -> None:
    channel = f"wire-{version}"
    raw = RawStream(server.url, f"/stream/{channel}", version=version).read_head()
    assert raw.chunked == (version == "1.1")
    raw.skip_opening()
    server.wait_for(lambda stats: stats["channels"].get(channel) == 1)
    # One request publishes the three, one after the other: each publish
    # yields once (so that requests publishing at the same moment share its
    # delivery), and each event goes out as a chunk of its own, written by
    # the publisher (direct) or by the stream it wakes.
    ids = server.publish(channel, "é {n}\nline two", count=3)
    events = [Event(f"é {n}\nline two", id=i).encode() for n, i in enumerate(ids)]
    if not raw.chunked:
        assert raw.read_raw(len(b"".join(events))) == b"".join(events)
    else:
        expected = b"".join(chunk(e) for e in events)
        assert raw.read_raw(len(expected)) == expected
    raw.sock.close()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_write_taken_in_part_is_finished_first(server: Server, version: str) -> None:
    """Events far larger than the socket's buffers, to a client that reads
    only once all are published: each direct write is taken in part, and the
    stream sends the rest before the next event.
    """
    channel = f"partial-{version}"
    path = f"/stream/{channel}"
    if version == "1.1":
        stream = RawStream(server.url, path, rcvbuf=4096, timeout=10).read_head()
        stream.read_body()  # the opening
    else:  # read on the wire: no chunk framing to undo
        raw = RawStream(server.url, path, version="1.0", rcvbuf=4096).read_head()
        raw.skip_opening()
    server.wait_for(lambda stats: stats["channels"].get(channel) == 1)
    big = "x" * 50_000 + " {n}"
    ids = []
    for _ in range(4):
        ids += server.publish(channel, big, count=5)
    expected = [Event(big.replace("{n}", str(n % 5)), id=i) for n, i in enumerate(ids)]
    if version == "1.1":
        # RawStream's parser checks every chunk's size line and CRLF.
        assert stream.events(20) == expected
        stream.close()
    else:
        wire = b"".join(e.encode() for e in expected)
        assert raw.read_raw(len(wire)) == wire
        raw.sock.close()
    counters = server.stats()["counters"]
    assert counters["dropped"] == 0


@pytest.mark.redis
def test_a_burst_the_redis_listener_reads_at_once_is_one_write(
    redis_server: RedisServer,
) -> None:
    """Events stored in one transaction reach the worker in one XREAD reply:
    a waiting client gets them as one run, in one chunk, bytes shared.
    """
    prefix = f"burst-{uuid.uuid4().hex[:8]}:"
    config = {"BACKEND": redis_server.url, "REDIS_PREFIX": prefix, "HEARTBEAT": 60}
    server = Server("gevent", config=config).start()
    try:
        raw = RawStream(server.url, "/stream/burst").read_head()
        raw.skip_opening()
        server.wait_for(lambda stats: stats["channels"].get("burst") == 1)
        client = redis_server.client()
        append = client.register_script(APPEND_SCRIPT)
        keys = Keys(prefix)
        with client.pipeline(transaction=True) as pipe:
            for n in range(5):
                call = Append(
                    stream=keys.stream("burst"),
                    last_key=keys.last_id,
                    epoch_key=keys.epoch,
                    once_key="",
                    maxlen=100,
                    ttl_ms=0,
                    event="",
                    data=f"b{n}\nsecond line",
                    known_key="0-0",
                    new_epoch="unused",
                    window_ms=0,
                    known_epoch="",
                )
                append(keys=call.keys(), args=call.argv(), client=pipe)
            replies = [append_reply(reply) for reply in pipe.execute()]
        ids = [format_id(reply.key, reply.epoch) for reply in replies]
        events = [Event(f"b{n}\nsecond line", id=i).encode() for n, i in enumerate(ids)]
        expected = chunk(b"".join(events))
        assert raw.read_raw(len(expected)) == expected
        raw.sock.close()
    finally:
        server.stop()
