"""Test clients that read what a real server sends, byte for byte."""

from __future__ import annotations

import socket
import time
import typing as t

from flask_eventstream import Event
from flask_eventstream.testing import Parser


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk, as a server frames a write."""
    return b"%X\r\n%b\r\n" % (len(data), data)


#: The socket of every :class:`RawStream`: conftest closes those a test
#: left open (it failed before it closed them), which would otherwise warn
#: (``ResourceWarning``, an error here) in whatever test runs next.
SOCKETS: list[socket.socket] = []


class RawStream:
    """An HTTP/1.1 GET over a plain socket: the head as sent, then the body
    de-chunked, with a deadline on every read.
    """

    def __init__(
        self,
        url: str,
        path: str,
        headers: t.Mapping[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
        version: str = "1.1",
        deferred: bool = False,
    ) -> None:
        """:param deferred: connect, but send the request at :meth:`send`
        (many clients' requests arrive as one burst)."""
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        SOCKETS.append(self.sock)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        lines = [f"GET {path} HTTP/{version}", f"Host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.sock.connect((host, int(port)))
            if not deferred:
                self.send()
        except BaseException:
            self.sock.close()  # refused (a server restarting): no socket left open
            raise
        self._buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw_head = b""
        self.chunked = False
        self._remaining = 0  # bytes left in the current chunk
        self.ended = False
        self.parser = Parser()

    def send(self) -> None:
        """Send the request (at once, unless made ``deferred``)."""
        self.sock.sendall(self.request)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        return data

    def read_head(self) -> RawStream:
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        self.raw_head = head
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        return self

    def open(self, cursor: str = "") -> list[Event]:
        """Read the head and the first chunk; return the events in it (a
        resumed stream sends the replayed events with its ``retry:`` line).
        """
        self.read_head()
        self.parser = Parser(last_event_id=cursor)
        return self.parser.feed(self.read_body())

    def read_body(self) -> bytes:
        """Return the next body bytes the server sent (at least one byte), or
        ``b""`` once the body has ended.
        """
        if not self.status:
            self.read_head()
        if self.ended:
            return b""
        if not self.chunked:
            if not self._buffer:
                try:
                    self._buffer = self._recv()
                except EOFError:
                    self.ended = True
                    return b""
            data, self._buffer = self._buffer, b""
            return data
        while True:
            if self._remaining:
                if not self._buffer:
                    self._buffer = self._recv()
                data = self._buffer[: self._remaining]
                self._buffer = self._buffer[len(data) :]
                self._remaining -= len(data)
                if not self._remaining:
                    self._buffer = self._skip_crlf(self._buffer)
                return data
            while b"\r\n" not in self._buffer:
                self._buffer += self._recv()
            size_line, self._buffer = self._buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.ended = True
                return b""
            self._remaining = size

    def _skip_crlf(self, buffer: bytes) -> bytes:
        while len(buffer) < 2:
            buffer += self._recv()
        assert buffer[:2] == b"\r\n", buffer[:10]
        return buffer[2:]

    def read_raw(self, size: int) -> bytes:
        """Return the next ``size`` body bytes as they came on the wire,
        chunk framing included.
        """
        while len(self._buffer) < size:
            self._buffer += self._recv()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def skip_opening(self) -> None:
        """Read past the stream's first write (a retry: and id: block), on
        the wire (call it before any other read of the body).
        """
        if not self.status:
            self.read_head()
        if self.chunked:
            while b"\r\n" not in self._buffer:
                self._buffer += self._recv()
            size = int(self._buffer.split(b"\r\n", 1)[0], 16)
            self.read_raw(len(b"%x\r\n" % size) + size + 2)
        else:
            while b"\n\n" not in self._buffer:
                self._buffer += self._recv()
            self._buffer = self._buffer.split(b"\n\n", 1)[1]

    def read_exactly(self, expected: bytes) -> bytes:
        """Read until ``len(expected)`` body bytes arrived; return them."""
        got = b""
        while len(got) < len(expected):
            data = self.read_body()
            if not data:
                break
            got += data
        return got

    def events(self, count: int) -> list[Event]:
        """Read until ``count`` events have been dispatched."""
        found: list[Event] = []
        while len(found) < count:
            data = self.read_body()
            if not data:
                raise EOFError(f"the stream ended after {len(found)} events")
            found += self.parser.feed(data)
        return found

    def read_to_end(self, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        got = b""
        while time.monotonic() < deadline:
            data = self.read_body()
            if not data:
                return got
            got += data
        raise TimeoutError("the stream did not end")

    def close(self) -> None:
        self.sock.close()


class Proxy:
    """A TCP forwarder in front of a server, whose connections a test can cut
    (the client sees the server drop it) while it keeps accepting new ones.

    While :attr:`drop_replies` is set, what the server answers is thrown away
    and the connection cut: the request reached the server, its reply is lost.
    """

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        self.drop_replies = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, upstream]
            for a, b, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pipe, args=(a, b, replies), daemon=True
                ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.drop_replies:
                    break  # lost on the way: both ends see the connection drop
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        """Drop every open connection; return how many there were."""
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(sockets) // 2

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()


class Follower:
    """A client that reads a stream in a thread of its own and, like
    EventSource, reconnects with ``Last-Event-ID`` when the connection drops.
    """

    def __init__(
        self,
        url: str,
        path: str,
        total: int,
        timeout: float = 60,
        *,
        until: t.Callable[[Event], bool] | None = None,
    ) -> None:
        """Read until ``total`` events arrived, or one for which ``until``
        holds.
        """
        import threading

        self.url, self.path, self.total, self.timeout = url, path, total, timeout
        self.until = until
        self._checked = 0
        self._met = False
        self.received: list[Event] = []
        self.reconnects = 0
        self.pids: list[str] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        cursor = ""
        deadline = time.monotonic() + self.timeout
        try:
            while not self._finished():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self.received)} of {self.total}")
                headers = {"Last-Event-ID": cursor} if cursor else {}
                raw = None
                try:
                    raw = RawStream(self.url, self.path, headers, timeout=15)
                    self.received += raw.open(cursor)
                    if raw.status != 200:
                        raise EOFError(f"status {raw.status}")
                    self.pids.append(raw.headers.get("x-worker-pid", ""))
                    cursor = raw.parser.last_event_id
                    self.ready.set()
                    while not self._finished():
                        self.received += raw.events(1)
                        cursor = raw.parser.last_event_id
                except (EOFError, OSError):
                    self.reconnects += 1
                    time.sleep(0.1)  # the stream's retry hint, shortened
                finally:
                    if raw is not None:
                        raw.close()
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.ready.set()
            self.done.set()

    def _finished(self) -> bool:
        if self.until is not None:
            fresh = self.received[self._checked :]
            self._checked = len(self.received)
            self._met = self._met or any(self.until(event) for event in fresh)
            return self._met
        return len(self.received) >= self.total

    def wait(self, timeout: float = 60) -> list[Event]:
        assert self.done.wait(timeout), f"{len(self.received)} of {self.total}"
        if self.error is not None:
            raise self.error
        return self.received


class Member:
    """One client of a :class:`Crowd`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.events: list[Event] = []
        self.statuses: list[int] = []
        self.pids: list[str] = []
        self.cursor = ""
        self.connects = 0
        self.gave_up = False
        self.retry = 500
        self.retries: list[int] = []  # each connection's last retry: hint
        self.index = 0
        self.sock: socket.socket | None = None
        self.head = b""
        self.parser = Parser()


class Crowd:
    """Many EventSource-like clients served by one thread.

    Each sends an HTTP/1.0 GET (its body then ends with the connection),
    parses what arrives, and when the connection ends reconnects with
    ``Last-Event-ID`` after the stream's ``retry:`` delay, as a browser does.
    Like EventSource, it stops for good on a 204 or any 4xx; it retries a 5xx.
    """

    def __init__(self, url: str, paths: t.Sequence[str]) -> None:
        import selectors
        import threading

        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.members = [Member(path) for path in paths]
        for index, member in enumerate(self.members):
            member.index = index
        self._selector = selectors.DefaultSelector()
        self._due: list[tuple[float, int]] = [(0.0, n) for n in range(len(paths))]
        self._changed = threading.Condition()
        self._stopped = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # -- what a test reads -------------------------------------------------

    def received(self) -> int:
        return sum(len(m.events) for m in self.members)

    def wait_until(self, check: t.Callable[[], bool], timeout: float = 30) -> None:
        """Wait until ``check()`` holds, re-checked after every read; fail at
        the deadline.
        """
        with self._changed:
            ok = self._changed.wait_for(
                lambda: self.error is not None or check(), timeout
            )
        if self.error is not None:
            raise self.error
        assert ok, f"not reached in {timeout}s; {self.received()} events received"

    def close(self) -> None:
        self._stopped = True
        self._thread.join(10)
        for member in self.members:
            if member.sock is not None:
                member.sock.close()
        self._selector.close()

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        import heapq

        try:
            while not self._stopped:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, index = heapq.heappop(self._due)
                    self._connect(self.members[index])
                wait = 0.05
                if self._due:
                    wait = max(0.0, min(wait, self._due[0][0] - now))
                ready = self._selector.select(wait)
                for key, _ in ready:
                    self._read(key.data)
                if ready:
                    with self._changed:
                        self._changed.notify_all()
        except BaseException as error:  # reported to the test
            self.error = error
            with self._changed:
                self._changed.notify_all()

    def _connect(self, member: Member) -> None:
        import selectors

        try:
            sock = socket.create_connection(self.address, timeout=5)
        except OSError:
            self._schedule(member)
            return
        headers = f"Last-Event-ID: {member.cursor}\r\n" if member.cursor else ""
        request = f"GET {member.path} HTTP/1.0\r\nHost: test\r\n{headers}\r\n"
        sock.sendall(request.encode())
        sock.setblocking(False)
        member.sock, member.head = sock, b""
        member.parser = Parser(last_event_id=member.cursor)
        member.connects += 1
        self._selector.register(sock, selectors.EVENT_READ, member)

    def _read(self, member: Member) -> None:
        assert member.sock is not None
        try:
            data = member.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._ended(member)
            return
        if member.head is not None:
            member.head += data
            if b"\r\n\r\n" not in member.head:
                return
            head, data = member.head.split(b"\r\n\r\n", 1)
            member.head = None  # type: ignore[assignment]
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            member.statuses.append(status)
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "x-worker-pid":
                    member.pids.append(value.strip())
            if status == 204 or 400 <= status < 500:
                member.gave_up = True
        member.events += member.parser.feed(data)
        member.cursor = member.parser.last_event_id

    def _ended(self, member: Member) -> None:
        assert member.sock is not None
        self._selector.unregister(member.sock)
        member.sock.close()
        member.sock = None
        if member.parser.retry is not None:
            member.retry = member.parser.retry
            member.retries.append(member.retry)
        if not member.gave_up and not self._stopped:
            self._schedule(member)

    def _schedule(self, member: Member) -> None:
        import heapq

        due = time.monotonic() + member.retry / 1000
        heapq.heappush(self._due, (due, member.index))


class FastPublisher:
    """Publishes through the test app's ``POST /publish`` on one kept-alive
    connection, each request in one write with Nagle off: what it measures
    is the server, not the client's delayed ACKs.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def publish(self, channel: str, data: str) -> str:
        """Publish one event; return its id."""
        status, answer = self.post(channel, data)
        assert status == 200, answer
        return str(answer[0])

    def post(
        self, channel: str, data: str, event: str | None = None
    ) -> tuple[int, t.Any]:
        """Send one publish request; return its status and JSON answer."""
        import json
        from urllib.parse import urlencode

        form = {"channel": channel, "data": data}
        if event is not None:
            form["event"] = event
        body = urlencode(form).encode()
        head = (
            "POST /publish HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self.sock.recv(65536)
        head_bytes, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head_bytes.split(b"\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in lines
                if line.lower().startswith(b"content-length")
            )
        )
        while len(self._buffer) < length:
            self._buffer += self.sock.recv(65536)
        answer, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(lines[0].split()[1]), json.loads(answer)

    def close(self) -> None:
        self.sock.close()
