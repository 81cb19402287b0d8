"""Parked streams: under gunicorn's gevent worker an idle stream holds no
greenlet; its heartbeats, events and end reach the client as they would
from a stream that kept one, byte for byte.
"""

from __future__ import annotations

import signal
import typing as t

import pytest
from clients import chunk
from clients import RawStream
from conftest import Server

from flask_eventstream import Event


@pytest.fixture(scope="module", params=[True, False], ids=["parked", "off"])
def server(request: pytest.FixtureRequest) -> t.Iterator[Server]:
    config = {"DIRECT_WRITES": request.param, "HEARTBEAT": 0.3}
    with Server("gevent", config=config) as server:
        yield server


def parked(server: Server) -> bool:
    return server.env["FLASK_EVENTSTREAM_DIRECT_WRITES"] == "true"


def test_idle_streams_hold_no_greenlet(server: Server) -> None:
    before = server.debug()["greenlets"]
    tracked = server.debug()["tracked"]
    streams = [RawStream(server.url, "/stream/idle").read_head() for _ in range(200)]
    try:
        for raw in streams:
            raw.skip_opening()
        found = server.wait_for(lambda stats: stats["channels"].get("idle") == 200)
        assert found["connections"] >= 200
        debug = server.debug()
        greenlets = debug["greenlets"]
        if parked(server):
            assert greenlets < before + 20, (before, greenlets)
            # A full collection visits every object the collector tracks, so
            # its pause grows with what each idle stream keeps: 14.6 here,
            # 20.6 when the writer and its timer took bound callbacks of
            # their own and the stream kept its options.
            per_stream = (debug["tracked"] - tracked) / 200
            assert per_stream <= 16, per_stream
        else:  # the contrast: a greenlet each
            assert greenlets >= before + 200, (before, greenlets)
        # Parked or not, each one is served: an event reaches all of them.
        (id_,) = server.publish("idle", "to all {n}")
        expected = chunk(Event("to all 0", id=id_).encode())
        for raw in streams:
            got = raw.read_raw(len(expected))
            while got.startswith(chunk(b":\n")):  # a heartbeat came first
                got = got[len(chunk(b":\n")) :] + raw.read_raw(len(chunk(b":\n")))
            assert got == expected
    finally:
        for raw in streams:
            raw.close()
    server.wait_for(lambda stats: "idle" not in stats["channels"], timeout=10)


def test_heartbeats_events_and_the_end_are_the_same_bytes(server: Server) -> None:
    raw = RawStream(server.url, "/stream/beats").read_head()
    try:
        assert raw.chunked
        raw.skip_opening()
        server.wait_for(lambda stats: stats["channels"].get("beats") == 1)
        # Two heartbeats of a stream left idle, each framed as gunicorn does.
        assert raw.read_raw(2 * len(chunk(b":\n"))) == 2 * chunk(b":\n")
        ids = server.publish("beats", "e{n}", count=2)
        expected = b"".join(
            chunk(Event(f"e{n}", id=i).encode()) for n, i in enumerate(ids)
        )
        wire = b""
        while len(wire.replace(chunk(b":\n"), b"")) < len(expected):
            wire += raw.read_raw(1)
        assert wire.replace(chunk(b":\n"), b"") == expected
        # Its end: the last chunk, then the connection closes.
        server.http.post("/close", data={"channel": "beats"}, timeout=5)
        assert raw.read_to_end().replace(b":\n", b"") == b""
        assert raw.ended
        server.wait_ended("beats", "revoked")
        if parked(server):  # gunicorn would keep it for another request
            assert raw.sock.recv(1) == b""
    finally:
        raw.close()


def test_a_stopping_worker_sends_parked_streams_their_retry_hint() -> None:
    server = Server("gevent", config={"HEARTBEAT": 60, "RETRY": 1.0}).start()
    streams = [RawStream(server.url, "/stream/stop").read_head() for _ in range(50)]
    try:
        for raw in streams:
            raw.skip_opening()
        server.wait_for(lambda stats: stats["channels"].get("stop") == 50)
        server.stop(signal.SIGTERM)
        for raw in streams:
            ending = raw.read_to_end()
            assert ending.startswith(b"retry: ") and ending.endswith(b"\n"), ending
            assert 1000 <= int(ending[7:-1]) <= 2000
            assert raw.ended  # the last chunk came
        server.wait_ended("stop", "shutdown", count=50)
    finally:
        for raw in streams:
            raw.close()
        server.stop()
