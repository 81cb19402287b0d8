"""Events written to a waiting client's socket by the publisher itself.

Under gunicorn's gevent worker a stream's greenlet sleeps between events.
Waking it for every event costs a greenlet switch, a timer and a trip through
gunicorn's write path: most of what a delivery costs, paid once per client.
So while a stream waits with nothing queued, the greenlet that publishes (or
the Redis listener) writes the event to the client's socket itself, with one
``send`` that never blocks. Only when the kernel does not take the whole event
does the stream wake, to send the rest before anything else. The bytes are
those the stream would have written: the event, framed as an HTTP/1.1 chunk
when gunicorn frames the response.

This is done only where it is exact: the response object is gunicorn's own
(its ``start_response`` reached the app unwrapped, which
:func:`capture_start_response` records), on a plain gevent socket (not TLS).
``EVENTSTREAM_DIRECT_WRITES = False`` turns it off, for a WSGI middleware that
rewrites response bodies between the app and gunicorn, which it would bypass.
"""

from __future__ import annotations

import _socket
import os
import sys
import typing as t

from ..ids import Run
from ..wire import frame_chunk
from .body import Body

#: Where :func:`capture_start_response` keeps the server's ``start_response``.
ENVIRON_KEY = "flask_eventstream.start_response"

WSGIApp = t.Callable[[dict[str, t.Any], t.Callable[..., t.Any]], t.Iterable[bytes]]


def capture_start_response(wsgi_app: WSGIApp) -> WSGIApp:
    """Wrap ``wsgi_app`` so a stream can find the server's response object."""

    def app(
        environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]
    ) -> t.Iterable[bytes]:
        environ[ENVIRON_KEY] = start_response
        return wsgi_app(environ, start_response)

    app.__wrapped__ = wsgi_app  # type: ignore[attr-defined]
    return app


class Holder(t.Protocol):
    """What takes a waiting stream's connection over from the server: the
    worker's :class:`~flask_eventstream.http.parking.Parking`.
    """

    def take(self, writer: DirectWriter, deadline: float) -> bool: ...

    def wake(self, writer: DirectWriter) -> None: ...


class DirectWriter:
    """Writes whole events to one client's socket without blocking: the
    :class:`~flask_eventstream.sink.Sink` of a stream.

    Once its stream parks (see :mod:`~flask_eventstream.http.parking`) it
    holds the connection itself: :meth:`detach`, then :meth:`write` and
    :meth:`finish` in place of the server's.
    """

    # fmt: off
    __slots__ = (
        "_response", "_chunked", "raw", "body", "pending", "holder", "woken",
    )
    # fmt: on

    def __init__(self, response: t.Any) -> None:
        self._response = response
        self._chunked = False
        #: The C socket under gevent's: its ``send`` fails rather than waits.
        self.raw: t.Any = response.sock._sock
        #: The stream's body: :meth:`flush` marks it as writing, for the
        #: monitor's send timeout.
        self.body: Body | None = None
        #: What a write left unsent; the stream sends it before anything else.
        self.pending: memoryview | None = None
        #: What parks the stream while it waits, if anything may. A shared
        #: object, not a callback bound to this writer: a worker holds
        #: thousands of these, and each object is work for the collector.
        self.holder: Holder | None = None
        #: Woken while it was not parked (see the parking module).
        self.woken = False

    @classmethod
    def find(cls, environ: dict[str, t.Any]) -> DirectWriter | None:
        """Return a writer for this request's connection, or ``None`` where
        direct writes would not be exact.
        """
        start_response = environ.get(ENVIRON_KEY)
        response = getattr(start_response, "__self__", None)
        gevent_socket = sys.modules.get("gevent._socket3")
        if (
            response is None
            or gevent_socket is None
            or type(response).__module__ != "gunicorn.http.wsgi"
            or environ.get("REQUEST_METHOD") != "GET"
            or environ.get("SERVER_PROTOCOL") not in ("HTTP/1.0", "HTTP/1.1")
            # Exactly gevent's plain socket: TLS has a subclass.
            or type(getattr(response, "sock", None)) is not gevent_socket.socket
            or response.sock is not environ.get("gunicorn.socket")
            or not hasattr(response, "chunked")
            or not hasattr(response, "force_close")
            or not isinstance(getattr(response, "sent", None), int)
        ):
            return None
        return cls(response)

    def _framed(self) -> bool:
        # Read each time: gunicorn decides when the view has returned.
        response = self._response
        return bool(response.chunked) if response is not None else self._chunked

    def _frame(self, data: bytes) -> bytes:
        """``data`` as the server would write it: one chunk, if framed."""
        return frame_chunk(data) if data and self._framed() else data

    def _count(self, sent: int) -> None:
        if self._response is not None:
            self._response.sent += sent  # gunicorn's access log counts the bytes

    def send(self, run: Run) -> bool:
        """Write the events of ``run``; return whether they were taken,
        wholly or in part (the rest is then :attr:`pending`). ``False`` leaves
        them to the stream: the socket's buffer is full, or the client is gone.
        """
        data = run.encode_chunk() if self._framed() else run.encode()
        try:
            sent: int = self.raw.send(data)
        except OSError:
            return False
        self._count(sent)
        if sent < len(data):
            self.pending = memoryview(data)[sent:]
        return True

    def park(self, deadline: float) -> bool:
        """Hand the stream's connection to its :attr:`holder` until
        ``deadline`` (``time.monotonic()``); ``False`` if it cannot be.
        """
        return self.holder is not None and self.holder.take(self, deadline)

    def wake(self) -> None:
        """The subscription has something for the stream: resume it if it is
        held (parked, or running since). Never waits.
        """
        if self.holder is not None and self._response is None:  # detached
            self.holder.wake(self)

    def flush(self) -> bool:
        """Send what is pending, waiting as a stream's write does; return
        ``False`` if the client is gone.
        """
        pending, self.pending = self.pending, None
        if pending is None:
            return True
        body = self.body
        if body is not None:
            body.begin_write()
        try:
            self._send_all(pending)
        except OSError:
            return False
        finally:
            if body is not None:
                body.end_write()
        return True

    def _send_all(self, data: bytes | memoryview) -> None:
        from gevent.socket import wait_write

        view = memoryview(data)
        while view:
            try:
                sent = self.raw.send(view)
            except BlockingIOError:
                wait_write(self.raw.fileno())
                continue
            self._count(sent)
            view = view[sent:]

    # -- a parked stream's connection ---------------------------------------

    def detach(self) -> bool:
        """Take the connection over from the server, which then ends its
        response without a byte more (no last chunk) and closes its own
        descriptor of the socket; return ``False`` if it cannot be taken.
        """
        response = self._response
        if response is None:
            return False
        try:
            raw = _socket.socket(fileno=os.dup(self.raw.fileno()))
            raw.setblocking(False)
        except (OSError, ValueError):
            return False
        self._chunked = bool(response.chunked)
        response.chunked = False  # gunicorn's close() then writes nothing
        response.force_close()  # and it does not wait for another request
        self._response = None  # nor keep gunicorn's request and parser alive
        self.raw = raw
        return True

    def write(self, data: bytes) -> None:
        """Write ``data`` as the server would (framed if the response is),
        waiting for the client; raise :class:`OSError` if it is gone.
        """
        self._send_all(self._frame(data))

    def finish(self, last: bytes = b"") -> None:
        """End the response (``last``, then the last chunk if framed), if the
        socket takes it at once, and close the connection.
        """
        data = self._frame(last) + (b"0\r\n\r\n" if self._framed() else b"")
        try:
            if data:
                self.raw.send(data)
        except OSError:
            pass
        try:
            self.raw.close()
        except OSError:
            pass
