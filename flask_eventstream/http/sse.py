"""A subscription served as an SSE stream: its opening, its replay, then live
events as they come (see :mod:`~flask_eventstream.http.stream`).

Gunicorn sends the response head only with the first chunk of the body, so
every stream starts with one at once (a ``retry:`` line, or a comment): the
browser's ``open`` event does not wait for the first event.
"""

from __future__ import annotations

import typing as t

from flask import request
from flask import Response

from ..errors import BackendUnavailable
from ..hub import Hub
from ..server import client_socket
from ..server import close_after
from ..server import fast_path
from ..settings import retry_milliseconds
from ..signals import EndReason
from ..subscription import Subscription
from .cors import cors_headers
from .stream import chunks
from .stream import HEARTBEAT
from .stream import jittered
from .stream import Stream


class Options:
    """A stream's heartbeat and retry (in milliseconds, as sent): the
    :func:`stream` options, else the app's settings.
    """

    __slots__ = ("heartbeat", "retry", "announce")

    def __init__(
        self,
        hub: Hub,
        heartbeat: float | None,
        retry: int | None,
        announce: bool = True,
    ):
        settings = hub.settings
        self.heartbeat = heartbeat if heartbeat is not None else settings.heartbeat
        self.retry = retry if retry is not None else settings.retry
        self.announce = announce

    def opening(self, announce: str | None) -> bytes:
        """The first chunk. A ``retry:`` line has no blank line of its own:
        browsers apply it as they read it, and a decoder that dispatches
        every block (httpx-sse) sees no empty event. A cursorless client
        also gets the id it resumes from, as a block with no data (a browser
        dispatches nothing; some decoders an empty message): unless the
        stream was opened with ``announce=False``. Else a comment.
        """
        fields = f"retry: {self.retry}\n" if self.retry is not None else ""
        if announce is not None and self.announce:
            return f"{fields}id: {announce}\n\n".encode()
        return fields.encode() if fields else HEARTBEAT


def sse_response(
    body: t.Iterable[bytes], hub: Hub, headers: t.Mapping[str, str] | None
) -> Response:
    """A ``text/event-stream`` response around ``body``."""
    # direct_passthrough: the chunks are bytes already, and the server gets
    # the iterator itself, with nothing of the Response around it to keep.
    response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    cors_headers(response, hub.settings)
    if headers:
        response.headers.update(headers)
    close_after(request.environ)
    return response


def unavailable_response(
    hub: Hub, options: Options, headers: t.Mapping[str, str] | None, what: object
) -> Response:
    """200, a retry hint and the end: ``EventSource`` gives up for good on
    any other status, and a backend that cannot be reached is a pause.
    """
    hub.count("errors")
    hub.logger.warning("Stream of %s not opened: the backend is unavailable.", what)
    # Jittered: after an outage, its clients do not all come back at once.
    pause = options.opening(None) + jittered(options.retry)
    pause += b": the backend is unavailable\n"
    return sse_response([pause], hub, headers)


class Events:
    """A subscription as a stream's source: the rest of its replay, a page
    at a time, then live events; each batch joined into few writes.
    """

    __slots__ = ("sub", "direct", "_first", "_replaying")

    def __init__(
        self, sub: Subscription, first: list[bytes], *, replaying: bool, direct: bool
    ) -> None:
        self.sub = sub
        #: The stream may be written to by the publisher while it waits.
        self.direct = direct
        self._first = first
        self._replaying = replaying

    def opening(self) -> list[bytes]:
        first, self._first = self._first, []
        return first

    def take(self, timeout: float) -> list[bytes] | None:
        sub = self.sub
        if self._replaying:
            try:
                records = sub.more()
            except BackendUnavailable as error:
                # A later page could not be read (a crowd took the pool): the
                # stream ends with its hint, its client resumes from its cursor.
                sub.hub.count("errors")
                sub.hub.logger.warning("Replay of %s cut short: %s", sub, error)
                sub.close(EndReason.UNAVAILABLE)
                return None
            if records:
                sub.hub.count("delivered", len(records))
                return chunks(records)
            self._replaying = False
        if timeout > 0:
            if self.direct:
                sub.arm()
            fresh = sub.wait(timeout)
        else:
            fresh = sub.take()
        if fresh is None:
            return None
        if not fresh:
            return []
        # Everything queued goes out together: under a burst this is what
        # lets a writer catch up instead of overflowing.
        sub.hub.count("delivered", len(fresh))
        return chunks(fresh)

    def arm(self) -> bool:
        return self.direct and not self._replaying and self.sub.arm()

    def end(self, reason: EndReason) -> None:
        self.sub.close(reason)

    def interrupt(self) -> None:
        self.sub.interrupt()

    @property
    def ended(self) -> EndReason | None:
        return self.sub.ended


def stream_response(
    sub: Subscription, options: Options, headers: t.Mapping[str, str] | None
) -> Response:
    """Serve ``sub`` as an event stream."""
    hub = sub.hub
    if hub.monitor.stopping:
        # This worker is stopping and would end the stream at once: send the
        # client on (a spread-out retry) without reading history for it.
        sub.close(EndReason.SHUTDOWN)
        return sse_response([jittered(options.retry)], hub, headers)
    try:
        # Connect and read history now, in the view: a failure is still an
        # answer, and the body starts with what it read.
        records, announce = sub.open()
    except BackendUnavailable:
        return unavailable_response(hub, options, headers, sub)
    environ = request.environ
    fast = fast_path() if hub.settings.direct_writes else None
    connection = fast.connection(environ) if fast is not None else None
    first = chunks(records)
    hub.count("delivered", len(records))
    opening = options.opening(announce)
    first[:1] = [opening + first[0]] if first else [opening]
    source = Events(sub, first, replaying=bool(records), direct=connection is not None)
    body = Stream(
        hub,
        source,
        name=repr(sub),
        heartbeat=options.heartbeat,
        retry=options.retry,
        socket=client_socket(environ, hub.settings.send_buffer),
        connection=connection,
        fast=fast,
    )
    sub.attach(body)
    return sse_response(body, hub, headers)


def retry_option(retry: float | None) -> int | None:
    """The ``retry:`` delay in milliseconds for a :func:`stream` ``retry``
    option in seconds (the old form, milliseconds, with a deprecation
    warning: see :func:`~flask_eventstream.settings.retry_milliseconds`).
    """
    return retry_milliseconds(retry, "@stream(retry=...)", stacklevel=3)
