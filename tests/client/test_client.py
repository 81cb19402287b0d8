"""The Python client, ``flask_eventstream.client.EventSource``, against a
real gunicorn gevent server: every event once, in order, across connections
cut at random; a reset surfaced; 204 and 403 stop it. And what httpx-sse
0.4.3, a common decoder, makes of the stream's opening.

Then against hostile servers (a raw socket server in a thread): the client
trusts nothing it reads. Lines and events are bounded, ``retry:`` is clamped
and failures back off, no field value makes it raise, and a stream cut into
one-byte reads is read as a whole one.
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
from clients import FastPublisher
from clients import Proxy
from conftest import serve
from conftest import Server
from httpx_sse import connect_sse
from sseclient import SSEClient

from flask_eventstream import Event
from flask_eventstream.client import EventSource
from flask_eventstream.client import EventTooLarge
from flask_eventstream.client import MAX_BACKOFF
from flask_eventstream.client import MAX_EVENT_BYTES
from flask_eventstream.client import MAX_RETRY
from flask_eventstream.client import RESET_EVENT
from flask_eventstream.client import StreamRefused
from flask_eventstream.testing import check_delivery

server = serve(config={"RETRY": 0.1})


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
        # One kept-alive connection: the run lasts the cuts, not the handshakes.
        publisher = FastPublisher(server.url)
        try:
            for n in range(total):
                published.append(publisher.publish("cuts", f"e{n}"))
                time.sleep(0.01)
        finally:
            publisher.close()

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


def until(check: t.Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; return whether it
    held (for conditions no event can be waited on: another object's state).
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_announced_id_is_kept_when_the_stream_drops_before_its_first_event(
    server: Server,
) -> None:
    proxy = Proxy(server.port)
    source = EventSource(f"{proxy.url}/stream/announced", timeout=10)
    got: list[Event] = []
    reader = threading.Thread(
        target=lambda: got.extend(collect(source, 3)), daemon=True
    )
    reader.start()
    try:
        # The opening id block (no data) is the cursor to resume from.
        assert until(lambda: source.last_event_id), "the announced id was dropped"
        # The connection drops before the first event; while the client is
        # away (its replies are lost), "first" is published.
        proxy.drop_replies = True
        proxy.cut()
        published = server.publish("announced", "first")
        proxy.drop_replies = False
        published += server.publish("announced", "second")
        published += server.publish("announced", "third")
        reader.join(20)
    finally:
        source.close()
        proxy.close()
    assert [e.data for e in got] == ["first", "second", "third"]
    check_delivery(published, got)


class Hostile:
    """A raw HTTP server on a loopback port that answers as the test says.

    Each connection's request head is kept in :attr:`requests` (the path and
    the lower-cased headers, values as bytes); ``answer(sock, n, request)``
    writes the answer of the ``n``-th connection (from 0), then the socket
    is closed: answers say ``Connection: close``, one request a connection.
    :attr:`left` is set when a client closed a connection whose answer was
    written (it read the end and went on).
    """

    def __init__(
        self, answer: t.Callable[[socket.socket, int, dict[str, bytes]], None]
    ) -> None:
        self.answer = answer
        self.requests: list[dict[str, bytes]] = []
        self.times: list[float] = []
        self.left = threading.Event()
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    return
                head += data
            line, *fields = head.split(b"\r\n\r\n")[0].split(b"\r\n")
            request = {":path": line.split()[1]}
            for field in fields:
                name, _, value = field.partition(b":")
                request[name.strip().lower().decode()] = value.strip()
            with self._lock:
                n = len(self.requests)
                self.requests.append(request)
                self.times.append(time.monotonic())
            self.answer(sock, n, request)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):  # until the client closes its side
                pass
            self.left.set()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


def _stream(sock: socket.socket, body: bytes = b"") -> None:
    """The head of a stream whose body runs until the connection closes."""
    sock.sendall(STREAM_HEAD + b"Connection: close\r\n\r\n" + body)


def _read_in_thread(source: EventSource) -> tuple[threading.Thread, list[t.Any]]:
    """Iterate ``source`` in a thread; the list gets each event, then the
    exception that ended the iteration, if one did.
    """
    got: list[t.Any] = []

    def read() -> None:
        try:
            for event in source:
                got.append(event)
        except Exception as error:  # handed to the test
            got.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


@pytest.mark.parametrize(
    ("limit", "piece"),
    [
        (None, b"x" * 65536),  # one line that never ends, default bound
        (4096, b"x" * 1000),  # the same, a bound of the caller's
        (4096, b"data: " + b"x" * 100 + b"\n"),  # data lines, no blank line
    ],
)
def test_a_line_or_an_event_past_the_bound_ends_the_iteration(
    limit: int | None, piece: bytes
) -> None:
    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        _stream(sock, b"data: ")
        while not hostile.stop.is_set():  # bytes forever
            sock.sendall(piece)

    hostile = Hostile(answer)
    extra: dict[str, t.Any] = {} if limit is None else {"max_event_bytes": limit}
    source = EventSource(f"{hostile.url}/s", timeout=5, **extra)
    reader, got = _read_in_thread(source)
    reader.join(30)
    hostile.close()
    source.close()
    assert not reader.is_alive(), "the client read on without a bound"
    (error,) = got
    assert isinstance(error, EventTooLarge)
    assert error.limit == (limit or MAX_EVENT_BYTES)
    assert "max_event_bytes" in str(error) and source.closed


def test_endless_comments_are_read_without_limit_and_close_ends_them() -> None:
    # Passes on the code before the bound too: it checks that the bound
    # counts what the client keeps (a line, an event's data), not the bytes
    # of a stream that dispatches nothing.
    sent = [0]

    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        _stream(sock)
        comments = b": keep-alive\n" * 4096
        while not hostile.stop.is_set():
            sock.sendall(comments)
            sent[0] += len(comments)

    hostile = Hostile(answer)
    source = EventSource(f"{hostile.url}/s", timeout=5, max_event_bytes=4096)
    reader, got = _read_in_thread(source)
    try:
        assert until(lambda: sent[0] > 64 * 4096), sent
        assert got == [] and reader.is_alive()
    finally:
        source.close()
        reader.join(10)
        hostile.close()
    assert not reader.is_alive() and got == []


def _connections_in_two_seconds(
    answer: t.Callable[[socket.socket, int, dict[str, bytes]], None], *, after: int
) -> tuple[Hostile, EventSource, int, list[t.Any]]:
    """How many connections a client makes to a hostile server in the two
    seconds after its first ``after``: the window is the measure.
    """
    hostile = Hostile(answer)
    source = EventSource(f"{hostile.url}/s", timeout=5)
    reader, got = _read_in_thread(source)
    assert until(lambda: len(hostile.requests) >= after)
    start = len(hostile.requests)
    hostile.stop.wait(2)
    made = len(hostile.requests) - start
    source.close()
    reader.join(10)
    hostile.close()
    return hostile, source, made, got


def test_retry_zero_does_not_reconnect_in_a_hot_loop() -> None:
    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        _stream(sock, b"retry: 0\n\n")

    _, source, made, got = _connections_in_two_seconds(answer, after=2)
    # Back-off from a floor of 100 ms, doubling: at most 5 in 2 s (the code
    # before it made about 2,400).
    assert made <= 6, made
    assert got == [] and source.failures >= 3


def test_5xx_answers_in_a_loop_back_off() -> None:
    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        if n == 0:
            _stream(sock, b"retry: 0\n\n")  # then the server breaks down
        else:
            sock.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\n"
                b"Content-Length: 4\r\nConnection: close\r\n\r\nbusy"
            )

    hostile, source, made, got = _connections_in_two_seconds(answer, after=3)
    assert made <= 6, made
    assert source.status == 503 and got == []
    # Each gap at least the floor; they grow (the jitter keeps each within
    # half of its doubling, so each is at least the one two before it).
    gaps = [b - a for a, b in zip(hostile.times, hostile.times[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert all(b >= a for a, b in zip(gaps, gaps[2:], strict=False)), gaps


def test_the_delay_is_clamped_and_jittered() -> None:
    source = EventSource("http://127.0.0.1:9/s")
    source.close()
    source.retry = 0
    assert source._delay(None) == 0.1  # the floor
    source.retry = 10**15
    assert source._delay(None) == MAX_RETRY / 1000  # the ceiling
    assert source._delay(float("inf")) == MAX_RETRY / 1000  # Retry-After too
    source.retry, source.failures = 1000, 3
    delays = {source._delay(None) for _ in range(50)}
    assert len(delays) > 1, "no jitter"
    assert all(4.0 <= d <= 8.0 for d in delays), delays
    source.failures = 60
    assert all(source._delay(None) <= MAX_BACKOFF / 1000 for _ in range(50))


@pytest.mark.parametrize(
    "answer_bytes",
    [
        STREAM_HEAD + b"Connection: close\r\n\r\nretry: 99999999999\n\n",
        STREAM_HEAD + b"Connection: close\r\n\r\nretry: " + b"9" * 5000 + b"\n",
        b"HTTP/1.1 503 Busy\r\nRetry-After: " + b"9" * 400 + b"\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    ],
    ids=["retry-11-digits", "retry-5000-digits", "retry-after-huge", "retry-after-2"],
)
def test_a_huge_or_strange_delay_is_no_crash(answer_bytes: bytes) -> None:
    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        sock.sendall(answer_bytes)

    hostile = Hostile(answer)
    source = EventSource(f"{hostile.url}/s", timeout=5)
    reader, got = _read_in_thread(source)
    try:
        # The client read the answer and closed its connection: it is in
        # its wait now (the code before crashed there, at once).
        assert hostile.left.wait(10)
        reader.join(0.5)
        assert got == [] and reader.is_alive()
        assert source._delay(None) <= MAX_RETRY / 1000
    finally:
        source.close()
        reader.join(10)
        hostile.close()
    assert not reader.is_alive() and got == []


def test_a_stream_cut_into_one_byte_reads_is_read_whole_and_resumed() -> None:
    # Every byte its own HTTP chunk, so its own read: a BOM, a UTF-8
    # character, CRLF and CR line ends are all split, and a long line comes
    # in 200,000 reads. The last event ends with a CR and nothing after it.
    big = "y" * 200_000
    body = (
        f"\ufeffid: \u00e91\r\nevent: t\r\ndata: \u2603\r\n\r\n: c\rdata: {big}\r\r"
    ).encode()
    resumed = threading.Event()

    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        if n == 0:
            sock.sendall(STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            sock.sendall(b"".join(b"1\r\n%c\r\n" % byte for byte in body))
            # Open until the test has both events; then dropped.
            resumed.wait(30)
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    hostile = Hostile(answer)
    source = EventSource(f"{hostile.url}/s", timeout=10)
    reader, got = _read_in_thread(source)
    try:
        assert until(lambda: len(got) == 2, timeout=30), got
        resumed.set()
        reader.join(10)
    finally:
        resumed.set()
        source.close()
        hostile.close()
    assert got == [
        Event("\u2603", event="t", id="\u00e91"),
        Event(big, id="\u00e91"),
    ]
    # It resumed with the id as UTF-8, as a browser sends it, and the 204
    # ended it.
    assert hostile.requests[1]["last-event-id"] == "\u00e91".encode()
    assert not reader.is_alive() and source.status == 204


def test_field_values_a_browser_ignores_or_keeps_raise_nothing() -> None:
    body = (
        b"id: 7\n\n"
        b"id: x\0y\nevent: t\0u\ndata: one\n\n"  # NUL: id ignored, type kept
        b"retry: abc\nretry: -5\nretry: 1e3\nretry:\nfoo: bar\ndata: two\n\n"
    )
    done = threading.Event()

    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        _stream(sock, body)
        done.wait(10)

    hostile = Hostile(answer)
    source = EventSource(f"{hostile.url}/s", timeout=5)
    reader, got = _read_in_thread(source)
    try:
        assert until(lambda: len(got) >= 2), got
    finally:
        done.set()
        source.close()
        reader.join(10)
        hostile.close()
    assert [(e.data, e.event, e.id) for e in got] == [
        ("one", "t\0u", "7"),
        ("two", None, "7"),
    ]
    assert source.retry == 3000 and source.last_event_id == "7"


def test_a_redirect_is_followed_and_resumed_and_a_page_is_refused() -> None:
    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        path = request[":path"]
        if path in (b"/old", b"/private"):
            target = b"/new" if path == b"/old" else b"/login"
            sock.sendall(
                b"HTTP/1.1 301 Moved\r\nLocation: " + target + b"\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        elif path == b"/new" and "last-event-id" not in request:
            _stream(sock, b"retry: 100\nid: 5\n\n")  # announced, then dropped
        elif path == b"/new":
            sock.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        else:
            page = b"<p>Please log in</p>"
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(page), page)
            )

    hostile = Hostile(answer)
    try:
        source = EventSource(f"{hostile.url}/old", timeout=5)
        reader, got = _read_in_thread(source)
        reader.join(10)
        assert not reader.is_alive() and got == [] and source.status == 204
        new = [r for r in hostile.requests if r[":path"] == b"/new"]
        assert [r.get("last-event-id") for r in new] == [None, b"5"]
        # A redirect to a login page: the stream cannot be read, and
        # reconnecting would not help.
        source = EventSource(f"{hostile.url}/private", timeout=5)
        reader, got = _read_in_thread(source)
        reader.join(10)
    finally:
        hostile.close()
    assert not reader.is_alive()
    (error,) = got
    assert isinstance(error, StreamRefused)
    assert error.status == 200 and "text/html" in error.message


def test_a_reader_that_stops_mid_chunk_resumes_after_its_last_event() -> None:
    def answer(sock: socket.socket, n: int, request: dict[str, bytes]) -> None:
        _stream(sock, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n")
        hostile.stop.wait(10)

    hostile = Hostile(answer)
    try:
        with EventSource(f"{hostile.url}/s", timeout=5) as source:
            first = next(iter(source))
    finally:
        hostile.close()
    # One write, so one read: the id to keep is the event's, not the read's.
    assert first.id == "1" and source.last_event_id == "1"
