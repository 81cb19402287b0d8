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

import sys
import typing as t

from ..ids import Run
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


class DirectWriter:
    """Writes whole events to one client's socket without blocking: the
    :class:`~flask_eventstream.sink.Sink` of a stream.
    """

    __slots__ = ("_raw", "_response", "body", "pending")

    def __init__(self, response: t.Any, body: Body) -> None:
        self._response = response
        #: The C socket under gevent's: its ``send`` fails rather than waits.
        self._raw = response.sock._sock
        #: The stream's body: :meth:`flush` marks it as writing, for the
        #: monitor's send timeout.
        self.body: Body | None = body
        #: What a write left unsent; the stream sends it before anything else.
        self.pending: memoryview | None = None

    @classmethod
    def find(cls, environ: dict[str, t.Any], body: Body) -> DirectWriter | None:
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
            or not isinstance(getattr(response, "sent", None), int)
        ):
            return None
        return cls(response, body)

    def send(self, run: Run) -> bool:
        """Write the events of ``run``; return whether they were taken,
        wholly or in part (the rest is then :attr:`pending`). ``False`` leaves
        them to the stream: the socket's buffer is full, or the client is gone.
        """
        # Read each time: gunicorn decides when the view has returned.
        data = run.encode_chunk() if self._response.chunked else run.encode()
        try:
            sent: int = self._raw.send(data)
        except OSError:
            return False
        self._response.sent += sent  # gunicorn's access log counts the bytes
        if sent < len(data):
            self.pending = memoryview(data)[sent:]
        return True

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
            self._response.sock.sendall(pending)
        except OSError:
            return False
        finally:
            if body is not None:
                body.end_write()
        self._response.sent += len(pending)
        return True
