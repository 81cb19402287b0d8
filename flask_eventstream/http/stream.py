"""The served stream: one object owns an event stream from its opening to its
end, whatever the view returned (a subscription, or a generator), and is the
one place that decides which bytes go on the socket and when.

A stream writes its opening, then what its source has (a subscription's
replay and live events, a generator view's items), a heartbeat comment after
each silence of ``heartbeat`` seconds, and at its end, if it ends for a
reason that sends clients elsewhere (shutdown, lifetime, expiry), a jittered
``retry:`` hint between two events, never inside one.

Under gunicorn's gevent worker (where :func:`~flask_eventstream.server.fast_path`
found what it needs) a stream of a subscription has a fast path:

- while it waits with nothing queued, the publisher (or the Redis listener)
  writes each event to its socket itself, with one ``send`` that never waits
  (:meth:`Stream.offer`); only the rest of an event the kernel did not take
  wakes the stream;
- an idle stream *parks*: it takes the connection from gunicorn (a duplicate
  descriptor and the response's chunk framing) and the request's greenlet
  returns. A timer stands for its heartbeat; a greenlet is made for it again
  only when it has something to write that the publisher could not, or its end.

Everywhere else a stream is served the portable way: the server's greenlet
(or thread) iterates it and it waits in place.
"""

from __future__ import annotations

import atexit
import enum
import os
import random
import time
import typing as t

from ..hub import Hub
from ..ids import Record
from ..ids import Run
from ..server import Connection
from ..server import FastPath
from ..server import shut_down
from ..signals import EndReason

#: A comment line: keeps proxies and the client's connection alive, and finds
#: a gone client when the write fails. No blank line follows, so no client
#: dispatches anything.
HEARTBEAT = b":\n"

#: The most bytes joined into one write (one event larger than this goes out
#: whole): what a client that stopped reading holds in a blocked write.
MAX_CHUNK = 256 * 1024


class State(enum.Enum):
    """Where a stream is in its life."""

    #: Nothing written yet: its source gives the opening first.
    OPENING = "opening"
    #: A greenlet or thread is producing or writing its bytes.
    RUNNING = "running"
    #: Waiting for its source in the server's greenlet or thread.
    WAITING = "waiting"
    #: Waiting without a greenlet: it holds its connection, and a timer.
    PARKED = "parked"
    #: Its end was decided: at most a last hint is left to write.
    ENDED = "ended"


class Source(t.Protocol):
    """What a stream sends: a subscription's events, or a generator's items."""

    def opening(self) -> list[bytes]:
        """The first writes, at once, so that the client's ``open`` fires
        without waiting for an event: a ``retry:`` line, the id a client
        without a cursor resumes from, and what is ready already.
        """

    def take(self, timeout: float) -> list[bytes] | None:
        """What is ready to write, waiting up to ``timeout`` seconds for
        something: ``[]`` for nothing, ``None`` once the source has ended.
        """

    def arm(self) -> bool:
        """Whether the stream may park: events then come through its
        :meth:`Stream.offer` and its :meth:`Stream.wake`.
        """

    def end(self, reason: EndReason) -> None:
        """End the source from outside: it releases what it holds."""

    def interrupt(self) -> None:
        """Make a :meth:`take` that waits return now: the stream has
        something of its own to write.
        """

    @property
    def ended(self) -> EndReason | None:
        """Why the source ended by itself, once :meth:`take` said so."""


class Stream:
    """One event stream, served: the WSGI body the server iterates, the
    :class:`~flask_eventstream.subscription.Consumer` its subscription
    delivers to, and what the worker's monitor watches and ends.

    :param hub: the app's live parts in this worker.
    :param source: what it sends.
    :param name: what it serves, for the log.
    :param heartbeat: seconds of silence before a heartbeat comment.
    :param retry: the ``retry:`` delay in milliseconds, for its last hint.
    :param socket: the client's socket, if the server exposes it.
    :param connection: its connection, on the fast path.
    :param fast: the worker's fast path, if the stream may park.
    """

    __slots__ = (
        "hub",
        "source",
        "name",
        "heartbeat",
        "retry",
        "socket",
        "connection",
        "state",
        "reason",
        "started",
        "writing_since",
        "sse",
        "_fast",
        "_out",
        "_rest",
        "_last_write",
        "_woken",
        "_timer",
        "_holds",
        "__weakref__",
    )

    def __init__(
        self,
        hub: Hub,
        source: Source,
        *,
        name: str,
        heartbeat: float,
        retry: int | None,
        socket: t.Any,
        connection: Connection | None = None,
        fast: FastPath | None = None,
    ) -> None:
        self.hub = hub
        self.source = source
        self.name = name
        self.heartbeat = heartbeat
        self.retry = retry
        #: The client's socket, for the monitor's hang-up poll and cuts.
        self.socket = socket
        self.connection = connection
        self.state = State.OPENING
        #: Why it ended, once that is decided.
        self.reason: EndReason | None = None
        self.started = time.monotonic()
        #: When the write in progress began; ``None`` between writes.
        self.writing_since: float | None = None
        #: An event stream, to which a lifetime applies (a long-poll is not).
        self.sse = True
        self._fast = fast if connection is not None else None
        #: Whole chunks to write, in order: few at a time (a list costs an
        #: idle stream less than a deque).
        self._out: list[bytes] = []
        #: What the kernel did not take of an offered run, framed already.
        self._rest: memoryview | None = None
        self._last_write = self.started
        #: Woken while it was not parked: it looks at its source again.
        self._woken = False
        self._timer: t.Any = None
        #: It keeps a greenlet or thread of the server (until it parks).
        self._holds = True
        hub.held += 1
        hub.monitor.add(self)

    def __repr__(self) -> str:
        return f"<Stream {self.name} {self.state.value}>"

    # -- what goes on the socket ------------------------------------------

    def _next(self) -> bytes | float | None:
        """The next bytes to write; else the time (``time.monotonic()``)
        until which there is nothing to write; ``None`` at the end.
        """
        self.writing_since = None
        self._woken = False
        if self.state is State.OPENING:
            self.state = State.RUNNING
            self._out = self.source.opening()
        # The rest of an offered run first: anything else would land inside it.
        if self._rest is not None and not self._write_rest():
            self._decide(EndReason.CLOSED)  # the client is gone: nothing more
            self.state = State.ENDED
            self._out.clear()
            return None
        if self._out:
            return self._emit(self._out.pop(0))
        if self.state is State.ENDED:
            return None
        if self.reason is None:
            ready = self.source.take(0)
            if ready:
                self._out.extend(ready)
                return self._emit(self._out.pop(0))
            if ready is not None:
                due = self._last_write + self.heartbeat
                return due if time.monotonic() < due else self._emit(HEARTBEAT)
            self._decide(self.source.ended or EndReason.CLOSED)
        # The end: every event before it went out whole.
        self.state = State.ENDED
        self.source.end(self.reason or EndReason.CLOSED)
        if self.reason is not None and self.reason.hinted:
            return self._emit(jittered(self.retry))
        return None

    def _emit(self, chunk: bytes) -> bytes:
        self._last_write = time.monotonic()
        return chunk

    def _decide(self, reason: EndReason) -> None:
        if self.reason is None:
            self.reason = reason

    def _wait(self, until: float) -> None:
        """Wait in this greenlet or thread for the source, until ``until``."""
        self.state = State.WAITING
        try:
            ready = self.source.take(until - time.monotonic())
        finally:
            if self.state is State.WAITING:
                self.state = State.RUNNING
        if ready:
            self._out.extend(ready)
        elif ready is None:
            self._decide(self.source.ended or EndReason.CLOSED)

    # -- served by the server ---------------------------------------------

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        while True:
            step = self._next()
            if isinstance(step, bytes):
                self.writing_since = time.monotonic()
                return step
            if step is None:
                if self.reason is EndReason.OVERFLOW and self.socket is not None:
                    # The server's last write (the last chunk) would wait for
                    # a client that does not read: fail it at once instead.
                    shut_down(self.socket)
                raise StopIteration
            if self._park(step):
                raise StopIteration  # the connection is the stream's now
            self._wait(step)

    def close(self) -> None:
        """The server is done with the body (WSGI ``close``); a parked stream
        goes on without it.
        """
        if self.connection is not None and self.connection.detached:
            return
        self._release()

    def _release(self) -> None:
        self._let_go()
        self.hub.monitor.discard(self)
        self._decide(EndReason.CLOSED)
        self.writing_since = None
        # Also when it never started (a HEAD request, a failed write of the
        # head): its source is ended all the same.
        self.source.end(self.reason or EndReason.CLOSED)

    def _let_go(self) -> None:
        # The server's greenlet or thread is free: it parked, or it ended.
        if self._holds:
            self._holds = False
            self.hub.held -= 1

    # -- ended from outside -----------------------------------------------

    def end(self, reason: EndReason) -> None:
        """End the stream after the write in progress (a whole event)."""
        self._decide(reason)
        self.source.end(reason)
        self.wake()

    def abort(self, reason: EndReason) -> None:
        """End the stream and cut its connection: a write to it is blocked
        and would not finish in time. The client sees the connection end
        inside the event, and dispatches none of it.
        """
        hub = self.hub
        if self.writing_since is not None or self._rest is not None:
            hub.count("dropped")
            hub.logger.warning(
                "Cut the stream of %s inside a write: %s; the client resumes"
                " from history when it reconnects.",
                self.name,
                "it blocked longer than EVENTSTREAM_SEND_TIMEOUT"
                if reason is EndReason.STALLED
                else "the worker stops, and it would not end in time",
            )
        self.end(reason)
        if self.socket is not None:
            shut_down(self.socket)

    # -- delivered to by its subscription (a Consumer) ---------------------

    def offer(self, run: Run) -> bool:
        """Write ``run`` now, from the publisher, if the socket takes it
        without waiting; the stream writes any rest before anything else.
        """
        connection = self.connection
        if connection is None or self._rest is not None:
            return False
        data = run.encode_chunk() if connection.framed else run.encode()
        sent = connection.offer(data)
        if sent <= 0:
            return False
        if sent < len(data):
            self._rest = memoryview(data)[sent:]
            self.wake()
        return True

    def wake(self) -> None:
        """Its source has something, or ended: resume it if it is parked.
        Never waits.
        """
        if self.state is State.WAITING:
            self.source.interrupt()
            return
        if self.state is not State.PARKED:
            self._woken = True  # running: it looks again before it parks
            return
        self.state = State.RUNNING
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        assert self._fast is not None
        self._fast.spawn(self._drive)

    def drop(self) -> None:
        """Its subscription overflowed: free a write to its client that is
        blocked (it ends when its loop sees the subscription ended).
        """
        if self.writing_since is not None and self.socket is not None:
            shut_down(self.socket)

    # -- parked -------------------------------------------------------------

    def _park(self, until: float) -> bool:
        """Wait without a greenlet until ``until``, or until woken; ``False``
        if it cannot park now.
        """
        fast, connection = self._fast, self.connection
        if fast is None or connection is None or self._woken:
            return False
        if not self.source.arm():
            return False
        if not connection.detached:
            if not connection.detach():
                self._fast = None  # it waits in place from now on
                return False
            self.socket = connection.raw
            self._let_go()
            self.hub.monitor.moved(self)
            Parking.here().held.add(self)
        self.state = State.PARKED
        # A millisecond late rather than early: the heartbeat is then due,
        # and the stream does not park again for what is left.
        delay = max(until - time.monotonic(), 0.0) + 0.001
        self._timer = fast.timer(delay, Stream.wake, self)
        return True

    def _drive(self) -> None:
        """Run a parked stream that was woken, until it parks again or ends."""
        connection = self.connection
        assert connection is not None
        try:
            while True:
                step = self._next()
                if isinstance(step, bytes):
                    self.writing_since = time.monotonic()
                    connection.write(step)
                elif step is None or self._park(step):
                    break
        except OSError:
            self._decide(EndReason.CLOSED)  # the client is gone
        except Exception:
            self.hub.logger.exception("A parked stream failed; it is closed.")
        if self.state is State.PARKED:
            return
        Parking.here().held.discard(self)
        self._release()
        if self.reason is EndReason.OVERFLOW or self.reason is EndReason.STALLED:
            connection.close()  # its client does not read
        else:
            connection.finish()

    def _write_rest(self) -> bool:
        """Write the rest of an offered run, waiting for the client; whether
        it went.
        """
        rest, self._rest = self._rest, None
        connection = self.connection
        if rest is None or connection is None:
            return True
        self.writing_since = time.monotonic()
        try:
            connection.write(rest, framed=True)
        except OSError:
            return False
        finally:
            self.writing_since = None
        return True

    def exit(self) -> None:
        """The process exits with this stream parked or being written: its
        last hint if it is between two events and the socket takes it at
        once, else the connection ends where it is.
        """
        connection = self.connection
        if connection is None:
            return
        if self.writing_since is not None or self._rest is not None:
            connection.close()  # inside an event: the client drops its part
        else:
            connection.finish(jittered(self.retry))


class Parking:
    """The streams of this process that hold their connection (parked, or
    woken and running), for the exit.
    """

    _current: t.ClassVar[Parking | None] = None

    @classmethod
    def here(cls) -> Parking:
        """This process's parking (a fork makes its own)."""
        current = cls._current
        if current is None or current.pid != os.getpid():
            current = cls._current = cls()
        return current

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.held: set[Stream] = set()
        atexit.register(self.exit)

    def exit(self) -> None:
        """Gunicorn does not wait for connections no greenlet of its serves:
        each held stream gets its last hint, if it can, as the process exits.
        """
        if self.pid != os.getpid():
            return  # a fork's copy
        for stream in list(self.held):
            stream.exit()
        self.held.clear()


def jittered(retry: int | None) -> bytes:
    """A last ``retry:`` hint, between once and twice the usual delay: the
    clients a stop cuts off come back spread out, not all at once. A line
    with no blank line after it: applied as read, dispatched as nothing.
    """
    base = retry if retry else 3000
    return f"retry: {random.randint(base, 2 * base)}\n".encode()


def chunks(records: t.Sequence[Record]) -> list[bytes]:
    """The records' bytes, joined into writes of about ``MAX_CHUNK`` bytes."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for record in records:
        data = record.event.encode()
        parts.append(data)
        size += len(data)
        if size >= MAX_CHUNK:
            out.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        out.append(b"".join(parts))
    return out
