"""The lifecycle of a streamed response body: started, watched by the monitor,
ended from outside, cut when its client stops reading, closed once.
"""

from __future__ import annotations

import _socket
import os
import random
import socket
import time
import typing as t

from flask import request

from ..hub import Hub


class Parker(t.Protocol):
    """What a waiting body hands its connection to: its stream's writer."""

    def park(self, deadline: float) -> bool: ...


class Body:
    """A response body that can be ended from another thread.

    A server closes the body from the thread that iterates it. A test client
    read with a timeout iterates it in a helper thread and closes it from the
    test's: closing a generator that is running raises, so instead ``wake``
    makes the running generator end, and its ``finally`` runs where it runs.

    The worker's :class:`~flask_eventstream.monitor.Monitor` watches every
    body: ``writing_since`` tells it a write is blocked, :meth:`end` and
    :meth:`abort` are how it ends one.
    """

    __slots__ = (
        "_gen",
        "_wake",
        "_busy",
        "_hub",
        "retry",
        "parker",
        "handed_over",
        "name",
        "sse",
        "socket",
        "started",
        "writing_since",
        "expires",
        "ending",
        "dropped",
        "__weakref__",
    )

    def __init__(
        self,
        gen: t.Generator[bytes | float, None, None],
        wake: t.Callable[[str], object],
        hub: Hub,
        *,
        name: str,
        retry: int | None = None,
        sse: bool = True,
        expires: float | None = None,
    ) -> None:
        self._gen = gen
        self._wake = wake
        self._busy = False
        self._hub = hub
        #: The stream's ``retry:`` delay, for its last hint.
        self.retry = retry
        #: Takes the connection from the server when the body waits (it
        #: yields the time its heartbeat is due): see the parking module.
        self.parker: Parker | None = None
        #: The server let go of the body: :meth:`close` is not the end.
        self.handed_over = False
        #: What the stream serves, for the log.
        self.name = name
        #: An event stream (the monitor's lifetime and last retry hint apply),
        #: not a long-poll.
        self.sse = sse
        #: The client's socket, when the server exposes it (gunicorn, Werkzeug).
        self.socket = client_socket()
        send_buffer = hub.settings.send_buffer
        if send_buffer is not None and self.socket is not None:
            # Bounds what the kernel holds for a client that stopped reading
            # (by default it grows to net.ipv4.tcp_wmem's maximum).
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.started = time.monotonic()
        #: When its subscriber token expires (Unix time): the monitor ends it.
        self.expires = expires
        #: When the server was handed the chunk it is writing; ``None`` while
        #: the body waits for its next one.
        self.writing_since: float | None = None
        #: Why the stream was ended from outside, if it was.
        self.ending: str | None = None
        #: Its client was dropped (see :meth:`drop`).
        self.dropped = False
        hub.monitor.add(self)

    def __iter__(self) -> Body:
        return self

    def __next__(self) -> bytes:
        chunk = self.advance()
        while not isinstance(chunk, bytes):
            # The stream waits with nothing to send: let the server go.
            if self.parker is not None and self.parker.park(chunk):
                raise StopIteration
            self.end("closed")  # it cannot wait here, nor be taken over
            chunk = self.advance()
        return chunk

    def advance(self) -> bytes | float:
        """The next chunk to write, or the time (``time.monotonic()``) the
        heartbeat is due when the stream waits parked; raise
        :class:`StopIteration` at the end.
        """
        self.writing_since = None
        self._busy = True
        try:
            chunk = next(self._gen)
        except StopIteration:
            if self.dropped:
                # The server's last write (the final chunk) would wait for a
                # client that does not read: fail it at once instead.
                self.cut(always=True)
                raise
            if self.ending not in ("shutdown", "lifetime", "expired") or not self.sse:
                raise
            self.sse = False  # one hint, then the end
            chunk = jittered(self.retry)
        finally:
            self._busy = False
        if isinstance(chunk, bytes):
            self.writing_since = time.monotonic()
        return chunk

    def close(self) -> None:
        if self.handed_over:
            return  # the server lets go: the parking closes it (release)
        self.release()

    def release(self) -> None:
        """Close the body: its generator, and what the view opened."""
        self._hub.monitor.discard(self)
        self.writing_since = None
        if not self._busy:
            self._gen.close()
        # Also when the body never started (a HEAD request, a failed write of
        # the head): what the view opened is closed all the same.
        self._wake("closed")

    def moved(self, sock: t.Any) -> None:
        """The connection was taken from the server and is now ``sock``."""
        self.handed_over = True
        self.socket = sock
        self._hub.monitor.moved(self)

    def begin_write(self) -> None:
        """A write outside the server's (a direct write's rest) has begun:
        the monitor times it as it times the server's.
        """
        self.writing_since = time.monotonic()

    def end_write(self) -> None:
        self.writing_since = None

    def end(self, reason: str) -> None:
        """End the stream after what it is writing: ``"shutdown"``,
        ``"lifetime"`` and ``"expired"`` (its token) add a jittered ``retry:``
        hint.
        """
        if self.ending is None:
            self.ending = reason
        self._wake(reason)

    def abort(self, reason: str) -> None:
        """End the stream and shut its connection down: its client is not
        reading, and the write it blocks would never finish.
        """
        hub = self._hub
        hub.count("dropped")
        hub.logger.warning(
            "Dropped the stream of %s (%s): a write blocked longer than"
            " EVENTSTREAM_SEND_TIMEOUT; the client resumes from history when"
            " it reconnects.",
            self.name,
            reason,
        )
        self.end(reason)
        self.cut()

    def drop(self) -> None:
        """Its client fell too far behind (a queue overflow): end the stream,
        and shut the connection down if a write to it is blocked, which frees
        the writer at once. Called from the publisher: calls no user code.
        """
        self.dropped = True
        self.cut()

    def cut(self, *, always: bool = False) -> None:
        """Shut the connection down if a write to it is blocked (or
        ``always``).
        """
        if (always or self.writing_since is not None) and self.socket is not None:
            shut_down_socket(self.socket)


def client_socket() -> t.Any:
    """The request's client socket, where the server exposes one."""
    environ = request.environ
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


def jittered(retry: int | None) -> bytes:
    """A last ``retry:`` hint, between once and twice the usual delay: the
    clients a stop cuts off come back spread out, not all at once. A line
    with no blank line after it: applied as read, dispatched as nothing.
    """
    base = retry if retry else 3000
    return f"retry: {random.randint(base, 2 * base)}\n".encode()


def shut_down_socket(sock: t.Any) -> None:
    """Shut a client's connection down both ways, from any thread or greenlet.

    It is done on a duplicate of the descriptor: gevent's own ``shutdown``
    cancels the blocked writer with an error gunicorn logs as a crash, while
    this fails its write with ``EPIPE``, which every server takes as a
    client that left.
    """
    try:
        # The C socket type: gevent's patched one would do the same as above.
        duplicate = _socket.socket(fileno=os.dup(sock.fileno()))
    except (OSError, ValueError, AttributeError):
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()
