"""A stream's life under gunicorn's gevent worker, from its admission to the
exit of the worker that serves it, checked on what a real client receives:
a worker that exits in the middle of an event, generator views that follow
the rules of the subscription they iterate, refusals with their own status,
non-stream responses to an ``EventSource``-like request, a worker at its
descriptor limit, ``Connection: close``, and the portable path when the
server's internals are not what the fast path expects.

The app is ``tests/lifecycleapp.py``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import typing as t
import uuid

import httpx
import pytest
from clients import chunk
from clients import RawStream
from conftest import RedisServer
from conftest import require
from conftest import ROOT
from conftest import serve
from conftest import Server
from conftest import TESTS

from flask_eventstream import Event
from flask_eventstream.wire import Parser

APP = "lifecycleapp:app"

#: How the server's log names the fallback from the fast path (direct writes
#: and parked streams) to the portable one: one WARNING line matches it.
#: Loose on purpose; adjust it here to the wording the package settles on.
FAST_PATH_WARNING = re.compile(
    r"portable|fall(?:s|ing)? ?back|fast path|server adapter", re.IGNORECASE
)

#: How the server's log names a descriptor limit too low for
#: ``EVENTSTREAM_MAX_CONNECTIONS``.
DESCRIPTOR_WARNING = re.compile(
    r"RLIMIT_NOFILE|descriptor limit|file descriptors|ulimit -n", re.IGNORECASE
)


#: A heartbeat, framed as gunicorn frames a write.
BEAT = chunk(b":\n")


def warning_lines(log: str, pattern: re.Pattern[str]) -> list[str]:
    """The lines of ``log`` logged at WARNING that match ``pattern``."""
    return [
        line for line in log.splitlines() if "WARNING" in line and pattern.search(line)
    ]


def ends_within(raw: RawStream, seconds: float) -> bool:
    """Read ``raw`` until its stream ends (its last chunk, or the connection
    closes); return whether that happened within ``seconds``.
    """
    deadline = time.monotonic() + seconds
    while not raw.ended:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        raw.sock.settimeout(left)
        try:
            raw.read_body()
        except TimeoutError:
            return False
        except (EOFError, ConnectionError):
            return True  # cut without its last chunk: ended all the same
    return True


#: The lifecycle app with the default settings (heartbeat 0.5 s).
server = serve(app=APP)


# -- 1. a worker that exits in the middle of an event ---------------------

#: The data of the large event: numbered every 10 characters, so a cut
#: shows where it is.
BIG = "".join(f"{n:09d}," for n in range(30_000))
assert len(BIG) == 300_000


def big_event_server(redis_server: RedisServer) -> Server:
    return Server(
        app=APP,
        config={
            # History that outlives the worker, and the server.
            "BACKEND": redis_server.url,
            "REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
            "MAX_EVENT_BYTES": 1_000_000,
            # The kernel takes 8 KB of a write, not the whole event (its
            # buffer would grow to hold it all): most of the event is still
            # the worker's to write when it is told to stop.
            "SEND_BUFFER": 8192,
            "HEARTBEAT": 5,
        },
    )


def dechunk(body: bytes) -> list[bytes]:
    """The chunks of an HTTP/1.1 chunked body as received, the last one
    possibly cut short (the connection closed inside it).
    """
    chunks = []
    while b"\r\n" in body:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        chunks.append(body[:size])
        if len(body) < size + 2:
            break  # cut inside this chunk: the rest never came
        assert body[size : size + 2] == b"\r\n", body[size : size + 10]
        body = body[size + 2 :]
    return chunks


def read_through_exit(
    server: Server, stop: t.Callable[[int], t.Callable[[], bool]]
) -> tuple[list[Event], str, str]:
    """Open ``/stream/big`` as a slow client, publish the large event, and
    while the client is inside it call ``stop(worker_pid)``, which stops the
    worker and returns whether it is gone yet. Read slowly until it is gone,
    then everything left.

    Return what the client dispatched, as a browser would, the cursor it
    reconnects with, and the id of the large event.
    """
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    # A small receive window: the worker writes as fast as the client reads.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    try:
        sock.sendall(f"GET /stream/big HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        wire = b""
        while b"\r\n\r\n" not in wire:
            wire += sock.recv(4096)
        head = wire.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.startswith("HTTP/1.1 200"), head
        assert "transfer-encoding: chunked" in head.lower(), head
        pid = int(re.findall(r"(?im)^x-worker-pid: *(\d+)", head)[0])
        server.wait_for(lambda stats: stats["channels"].get("big") == 1)
        response = server.http.post(
            "/publish", data={"channel": "big", "data": BIG}, timeout=10
        )
        response.raise_for_status()
        (big_id,) = response.json()

        def slowly() -> bool:
            """Read a little, as a client of about 20 KB/s; ``False`` at
            the end of the connection.
            """
            nonlocal wire
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            wire += data
            time.sleep(0.2 if data else 0.05)
            return bool(data)

        while len(wire) < 40_000:
            assert slowly(), "the stream ended before the large event"
        gone = stop(pid)  # inside the event: 40 of its 300 KB read
        deadline = time.monotonic() + 10
        open_ = True
        while not gone():
            assert time.monotonic() < deadline, "the worker did not exit in 10 s"
            open_ = open_ and slowly()
        # The worker is gone: what it wrote is all in the kernel now.
        while open_:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            wire += data
            open_ = bool(data)
    finally:
        sock.close()
    chunks = dechunk(wire.split(b"\r\n\r\n", 1)[1])
    parser = Parser()
    dispatched = [e for c in chunks for e in parser.feed(c)] + parser.end()
    for event in dispatched:
        assert (event.id, len(event.data)) == (big_id, len(BIG)), (
            f"the client dispatched an event of {len(event.data)} bytes of data"
            f" with id {event.id!r}, ending {event.data[-40:]!r}: the large event"
            f" is {len(BIG)} bytes, id {big_id!r}. The stream's last bytes:"
            f" {wire[-80:]!r}"
        )
        assert event.data == BIG
    # Nothing cut short was dispatched: the last id the client saw is that of
    # the last whole event (or the opening's, none arrived whole).
    assert parser.last_event_id, "the stream announced no cursor"
    return dispatched, parser.last_event_id, big_id


def resume_once(server: Server, cursor: str, big_id: str, before: list[Event]) -> str:
    """Reconnect after ``cursor``: the large event arrives whole, once in
    all (before the reconnection, or after it), then a later one. Return the
    pid of the worker that served the reconnection.
    """
    raw = RawStream(server.url, "/stream/big", {"Last-Event-ID": cursor})
    try:
        got = raw.open(cursor)
        assert raw.status == 200
        (after,) = server.publish("big", "after")
        while not got or got[-1].id != after:
            got += raw.events(1)
    finally:
        raw.close()
    big = Event(BIG, id=big_id)
    expected = [Event("after", id=after)]
    if big not in before:
        expected.insert(0, big)
    assert got == expected, [(e.id, len(e.data)) for e in got]
    assert (before + got).count(big) == 1
    return raw.headers["x-worker-pid"]


@pytest.mark.slow
def test_sigterm_in_the_middle_of_an_event_never_dispatches_it_cut_short(
    redis_server: RedisServer,
) -> None:
    """A worker stopped by SIGTERM while a slow client is inside a 300 KB
    event: the client never dispatches a truncated event (no hint written
    into the middle of the event), and after the server restarts it resumes
    from the last whole event and gets the large one intact, exactly once.
    """
    server = big_event_server(redis_server).start()
    try:

        def stop(pid: int) -> t.Callable[[], bool]:
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGTERM)
            return lambda: server.proc is not None and server.proc.poll() is not None

        before, cursor, big_id = read_through_exit(server, stop)
        server.stop()
        server.start()  # the same port, the same Redis history
        resume_once(server, cursor, big_id, before)
    finally:
        server.stop()


def test_sighup_in_the_middle_of_an_event_never_dispatches_it_cut_short(
    redis_server: RedisServer,
) -> None:
    """The same with a SIGHUP to the gunicorn master: the old worker exits
    with the client inside the event, which it never dispatches cut short;
    the client resumes on the new worker and gets the event intact once.
    """
    server = big_event_server(redis_server).start()
    old: list[int] = []
    try:

        def stop(pid: int) -> t.Callable[[], bool]:
            assert server.proc is not None
            old.append(pid)
            os.kill(server.proc.pid, signal.SIGHUP)
            return lambda: not running(pid)

        before, cursor, big_id = read_through_exit(server, stop)
        pid = resume_once(server, cursor, big_id, before)
        assert int(pid) not in old  # served by the new worker
    finally:
        server.stop()


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


# -- 2. generator views follow the rules of their subscription ------------


def open_both(server: Server, channel: str, query: str = "") -> list[RawStream]:
    """The subscription returned (the control) and iterated by a generator
    view, each streaming.
    """
    streams: list[RawStream] = []
    try:
        for view in ("stream", "gen"):
            raw = RawStream(server.url, f"/{view}/{channel}{query}", timeout=5)
            streams.append(raw)
            raw.read_head()
            assert raw.status == 200, (view, raw.status, raw.read_body())
        server.wait_for(lambda stats: stats["channels"].get(channel) == 2)
    except BaseException:
        for raw in streams:
            raw.close()
        raise
    return streams


def test_a_generator_view_ends_when_the_token_that_admitted_it_expires(
    server: Server,
) -> None:
    """A generator view admitted only by a 2-second token (authorize refuses
    ``private.*``) ends when the token expires, as the same subscription
    returned from a view does: not before, and within 1.5 s after.
    """
    token = server.http.get(
        "/token",
        params={"channels": "private.expiring", "expires_in": 2},
        timeout=5,
    ).text
    issued = time.monotonic()
    streams = open_both(server, "private.expiring", f"?token={token}")
    try:
        for raw, view in zip(streams, ("returned", "generator"), strict=True):
            assert ends_within(raw, issued + 3.5 - time.monotonic()), (
                f"the {view} view's stream is still open"
                f" {time.monotonic() - issued:.1f}s after its 2-second token"
            )
            took = time.monotonic() - issued
            assert took > 1.5, f"the {view} view's stream ended after {took:.1f}s"
    finally:
        for raw in streams:
            raw.close()


def test_close_channel_ends_a_generator_view(server: Server) -> None:
    """``events.close_channel`` ends a generator view iterating the channel,
    as it ends the subscription returned from a view.
    """
    streams = open_both(server, "closing")
    try:
        server.http.post("/close", data={"channel": "closing"}, timeout=5)
        for raw, view in zip(streams, ("returned", "generator"), strict=True):
            assert ends_within(raw, 1.5), f"the {view} view's stream is still open"
    finally:
        for raw in streams:
            raw.close()


def test_max_lifetime_ends_a_generator_view() -> None:
    """With ``EVENTSTREAM_MAX_LIFETIME = 1`` a generator view's stream ends
    after about a second, as the subscription returned from a view does.
    """
    server = Server(app=APP, config={"MAX_LIFETIME": 1}).start()
    try:
        opened = time.monotonic()
        streams = open_both(server, "aging")
        try:
            for raw, view in zip(streams, ("returned", "generator"), strict=True):
                assert ends_within(raw, opened + 2.5 - time.monotonic()), (
                    f"the {view} view's stream is still open after 2.5s"
                )
                took = time.monotonic() - opened
                assert took > 0.75, f"the {view} view's stream ended after {took:.2f}s"
        finally:
            for raw in streams:
                raw.close()
    finally:
        server.stop()


# -- 3. refusals inside a generator view ----------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status", "message"),
    [
        ("/secret.room", {}, 403, "secret.room"),
        ("/room?rewind=many", {}, 400, "rewind"),
        ("/private.room?token=eventstream-1.garbage", {}, 403, "token"),
    ],
    ids=["authorize", "rewind", "token"],
)
def test_a_refusal_in_a_generator_view_is_its_own_status_without_a_traceback(
    server: Server, path: str, headers: dict[str, str], status: int, message: str
) -> None:
    """A subscription a generator view iterates and the request may not have
    (authorize refuses, a bad ``?rewind=``, a bad token) answers its own
    status with its message, as when the view returns it; no traceback.
    """
    logged = len(server.output())
    for view in ("/stream", "/gen"):
        with httpx.stream(
            "GET", server.url + view + path, headers=headers, timeout=5
        ) as response:
            assert response.status_code == status, (
                f"{view}{path} answered {response.status_code}"
            )
            body = response.read().decode()
        assert message in body, body
    log = server.output()[logged:]
    assert "Traceback" not in log, log


# -- 4. responses that are not streams ------------------------------------


@pytest.mark.parametrize("what", ["static", "send_file", "csv"])
def test_accept_event_stream_never_breaks_a_response_that_is_not_a_stream(
    server: Server, what: str
) -> None:
    """``Accept: text/event-stream`` (what ``EventSource`` sends) on the
    package's own static client, a ``send_file`` and a streamed CSV: each
    answers 200 with its usual body, as without it.
    """
    if what == "static":
        path = server.http.get("/static-url", timeout=5).text
        body = (ROOT / "flask_eventstream" / "static" / "eventstream.js").read_bytes()
    elif what == "send_file":
        path, body = "/file", (TESTS / "lifecycleapp.py").read_bytes()
    else:
        path = "/csv?rows=50"
        body = b"".join(b"%d,row %d\r\n" % (n, n) for n in range(50))
    for accept in ("*/*", "text/event-stream"):
        response = server.http.get(path, headers={"Accept": accept}, timeout=5)
        assert response.status_code == 200, (path, accept, response.status_code)
        assert response.content == body, (path, accept)


# -- 5. a worker at its descriptor limit -----------------------------------


def message(raw: RawStream) -> bytes:
    """The body of a response that is not a stream."""
    if "content-length" in raw.headers:
        return raw.read_raw(int(raw.headers["content-length"]))
    return raw.read_to_end(timeout=1)


class LimitedServer(Server):
    """A server whose processes may open at most ``nofile`` descriptors."""

    def __init__(self, nofile: int, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self.nofile = nofile

    def command(self) -> list[str]:
        prlimit = require("prlimit")
        return [prlimit, f"--nofile={self.nofile}:{self.nofile}", *super().command()]


def test_a_worker_at_its_descriptor_limit_refuses_streams_and_keeps_answering() -> None:
    """With ``RLIMIT_NOFILE`` 256 and the default connection limit, 300
    streams: each is a 200 that stays open or a 503 with a message, none
    is left unanswered; a plain route still answers within a second; the
    worker never runs out of descriptors, and says at start (or at its first
    stream) that its limit is below what it is configured to hold.
    """
    server = LimitedServer(256, app=APP).start()
    streams: list[RawStream] = []
    refused: list[int] = []
    try:
        for n in range(300):
            # Answered at once, or not at all: a bounded wait for each.
            raw = RawStream(server.url, "/stream/crowd", timeout=1)
            streams.append(raw)
            try:
                raw.read_head()
            except (TimeoutError, EOFError, ConnectionError) as error:
                raise AssertionError(
                    f"stream {n} got no status line within 1s ({error!r}) with"
                    f" {len(streams) - 1} streams open and {len(refused)} refused"
                ) from None
            if raw.status == 200:
                assert not refused, f"stream {n} was served after refusals"
                continue
            assert raw.status == 503, (n, raw.status)
            assert message(raw).strip(), f"the 503 of stream {n} has no message"
            refused.append(n)
            streams.pop().close()
        assert refused, "300 streams served: the limit was not reached"
        print(f"{len(streams)} streams served, {len(refused)} refused")

        start = time.monotonic()
        health = server.http.get("/health", timeout=1)
        assert health.status_code == 200 and health.text == "ok"
        assert time.monotonic() - start < 1

        # Every stream served is still open: the next event reaches each.
        (id_,) = server.publish("crowd", "to all")
        for n, raw in enumerate(streams):
            try:
                assert raw.events(1) == [Event("to all", id=id_)]
            except EOFError:
                raise AssertionError(f"stream {n} was served, then ended") from None
    finally:
        for raw in streams:
            raw.close()
        server.stop()
    log = server.final_output
    assert "Too many open files" not in log
    assert warning_lines(log, DESCRIPTOR_WARNING), log[-3000:]


def full_or_served(
    server: Server, path: str, count: int
) -> tuple[list[RawStream], int]:
    """Open ``count`` streams of ``path`` one after the other; each is served
    (200) or refused (503 with a message and ``Connection: close``), none is
    left unanswered. Return the open streams and the first refused one.
    """
    streams: list[RawStream] = []
    for n in range(count):
        raw = RawStream(server.url, path, timeout=3)
        try:
            raw.read_head()
        except (TimeoutError, EOFError, ConnectionError) as error:
            raw.close()
            raise AssertionError(f"{path} {n} got no status line ({error!r})") from None
        if raw.status == 503:
            assert raw.headers.get("connection", "").lower() == "close", raw.raw_head
            assert b"most streams" in message(raw)
            raw.close()
            return streams, n
        assert raw.status == 200, (n, raw.status)
        streams.append(raw)
    return streams, count


@pytest.mark.parametrize(
    ("kind", "path", "extra", "limit"),
    [
        # worker_connections 30: 27 greenlets for streams that keep one.
        ("gevent", "/gen/held", ["--worker-connections", "30"], 27),
        # 20 threads, each stream keeps one: 18 streams.
        ("gthread", "/stream/held", ["--threads", "20"], 18),
    ],
    ids=["generator", "gthread-subscription"],
)
def test_streams_that_keep_a_greenlet_leave_some_to_other_requests(
    kind: str, path: str, extra: list[str], limit: int
) -> None:
    """A generator view keeps a greenlet of gunicorn's pool for as long as
    it streams (and under gthread every stream keeps a thread): past what
    the pool can spare, a 503 with ``Connection: close``, and a plain route
    still answers.
    """
    server = Server(kind, app=APP, extra=extra).start()
    streams: list[RawStream] = []
    try:
        streams, refused = full_or_served(server, path, limit + 5)
        assert refused == limit, f"the {refused + 1}th stream was refused"
        start = time.monotonic()
        health = server.http.get("/health", timeout=2)
        assert health.status_code == 200 and health.text == "ok"
        assert time.monotonic() - start < 1
        # One leaves: its greenlet or thread is free, and a stream is served.
        streams.pop().close()
        deadline = time.monotonic() + 5
        while True:
            more, refused = full_or_served(server, path, 1)
            if more:
                streams += more
                break
            assert time.monotonic() < deadline, "a freed slot was never reused"
            time.sleep(0.1)  # the worker notices a client left within a period
    finally:
        for raw in streams:
            raw.close()
        server.stop()
    assert "Traceback" not in server.final_output, server.final_output[-3000:]


def test_a_generator_that_never_yields_again_is_stopped_when_its_client_leaves(
    server: Server,
) -> None:
    """A generator view waiting on something that never comes does not keep
    its greenlet (and a copy of its request context) once its client left.
    """
    before = server.debug()["greenlets"]
    streams = [RawStream(server.url, "/never", timeout=5) for _ in range(20)]
    for raw in streams:
        raw.read_head()
        assert raw.status == 200
    assert server.debug()["greenlets"] >= before + 20
    for raw in streams:
        raw.close()
    deadline = time.monotonic() + 5
    while server.debug()["greenlets"] > before:
        assert time.monotonic() < deadline, (before, server.debug())
        time.sleep(0.1)


# -- 6. Connection: close ------------------------------------------------


def test_a_stream_response_says_connection_close(server: Server) -> None:
    """The head of a stream says ``Connection: close``: the connection ends
    with the stream, and a client knows not to send anything more on it.
    """
    raw = RawStream(server.url, "/stream/conn").read_head()
    try:
        assert raw.status == 200
        assert raw.headers.get("connection", "").lower() == "close", raw.raw_head
    finally:
        raw.close()


def test_a_request_pipelined_behind_a_stream_is_not_dropped_silently(
    server: Server,
) -> None:
    """A stream request and ``GET /health`` pipelined on one connection: the
    stream's head says ``Connection: close`` (so the client knows the second
    request goes unanswered and sends it again elsewhere), and after the
    stream's end the connection closes with nothing more on it.
    """
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"GET /stream/piped HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        wire = b""
        while b"\r\n\r\n" not in wire:
            wire += sock.recv(65536)
        head, body = wire.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert re.search(rb"(?im)^connection: *close\r?$", head), head
        server.wait_for(lambda stats: stats["channels"].get("piped") == 1)
        server.http.post("/close", data={"channel": "piped"}, timeout=5)
        deadline = time.monotonic() + 5
        while data := sock.recv(65536):
            body += data
            assert time.monotonic() < deadline
    # The stream's chunks, its last chunk, and nothing after it.
    assert body.endswith(b"0\r\n\r\n"), body[-80:]
    assert b"HTTP/1.1" not in body


# -- 7. the portable path -------------------------------------------------


def test_streams_work_the_portable_way_when_the_fast_path_cannot_be_used() -> None:
    """With attributes of gunicorn's response the fast path relies on hidden
    from the library (``LIFECYCLE_BREAK_PROBE``, see ``lifecycleapp``),
    every stream is served the portable way, byte for byte the same: the
    opening, heartbeats, a publish to 20 streams, their end. The log says so
    in exactly one WARNING line, and has no traceback.
    """
    server = Server(app=APP, config={"HEARTBEAT": 0.3})
    server.env["LIFECYCLE_BREAK_PROBE"] = "1"
    server.start()
    streams: list[RawStream] = []
    try:
        before = server.debug()["greenlets"]
        for _ in range(20):
            raw = RawStream(server.url, "/stream/portable").read_head()
            streams.append(raw)
            assert raw.status == 200 and raw.chunked
            raw.skip_opening()
        server.wait_for(lambda stats: stats["channels"].get("portable") == 20)
        # The portable way: each stream keeps its greenlet (none is parked).
        assert server.debug()["greenlets"] >= before + 20
        for raw in streams:
            assert raw.read_raw(len(BEAT)) == BEAT  # a heartbeat
        ids = server.publish("portable", "p{n}", count=3)
        expected = b"".join(
            chunk(Event(f"p{n}", id=i).encode()) for n, i in enumerate(ids)
        )
        for raw in streams:
            wire = b""
            while len(wire.replace(BEAT, b"")) < len(expected):
                wire += raw.read_raw(1)
            assert wire.replace(BEAT, b"") == expected
        server.http.post("/close", data={"channel": "portable"}, timeout=5)
        for raw in streams:
            assert raw.read_to_end(timeout=5).replace(b":\n", b"") == b""
            assert raw.ended
        server.wait_ended("portable", "revoked", count=len(streams))
    finally:
        for raw in streams:
            raw.close()
        server.stop()
    log = server.final_output
    found = warning_lines(log, FAST_PATH_WARNING)
    assert len(found) == 1, f"{len(found)} warnings match: {found}\n{log[-3000:]}"
    assert "Traceback" not in log, log
