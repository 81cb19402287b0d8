"""A subscription served as an SSE stream: the opening, the replay, then live
events as they come, each batch in one write, heartbeats when idle.

Gunicorn sends the response head only with the first chunk of the body, so
every stream starts with one at once (a ``retry:`` line, or a comment): the
browser's ``open`` event does not wait for the first event.
"""

from __future__ import annotations

import time
import typing as t

from flask import request
from flask import Response

from ..errors import BackendUnavailable
from ..hub import Hub
from ..ids import Record
from ..subscription import Subscription
from ..wire import Event
from .body import Body
from .body import jittered
from .cors import cors_headers
from .direct import DirectWriter
from .parking import Parking

#: A comment line: keeps proxies and the client's connection alive, and finds
#: a gone client when the write fails. No blank line follows, so no client
#: dispatches anything.
HEARTBEAT = b":\n"

#: The most bytes joined into one write (one event larger than this goes out
#: whole): what a client that stopped reading holds in a blocked write.
MAX_CHUNK = 256 * 1024


class Options:
    """A stream's heartbeat and retry: the :func:`stream` options, else the
    app's settings.
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
    return response


def stream_response(
    sub: Subscription, options: Options, headers: t.Mapping[str, str] | None
) -> Response:
    """Serve ``sub`` as an event stream."""
    hub = sub.hub
    if hub.monitor.stopping:
        # This worker is stopping and would end the stream at once: send the
        # client on (a spread-out retry) without reading history for it.
        sub.close("shutdown")
        return sse_response([jittered(options.retry)], hub, headers)
    try:
        # Connect and read history now, in the view: a failure is still an
        # answer, and the body starts with what it read.
        records, announce = sub.open()
    except BackendUnavailable as error:
        hub.count("errors")
        hub.logger.warning("Stream of %s not opened: %s", sub, error)
        # 200, a retry hint and the end: EventSource gives up for good on any
        # other status, and this must be a pause, not the end.
        pause = options.opening(None) + b": the backend is unavailable\n"
        return sse_response([pause], hub, headers)
    # Direct writes are used only once the stream waits, so after the head
    # and the opening are written: the publisher's writes come after them.
    writer = None
    if hub.settings.direct_writes:
        writer = DirectWriter.find(request.environ)
    gen = _subscription_body(sub, options, records, announce, writer is not None)
    body = Body(
        gen, sub.close, hub, name=repr(sub), retry=options.retry, expires=sub.expires
    )
    if writer is not None:
        # An idle stream waits parked, without its greenlet (see parking).
        writer.body = body
        writer.holder = Parking.here()
        body.parker = writer
    sub.serve(writer, body.drop)
    return sse_response(body, hub, headers)


def _subscription_body(
    sub: Subscription,
    options: Options,
    records: list[Record],
    announce: str | None,
    parks: bool,
) -> t.Generator[bytes | float, None, None]:
    hub = sub.hub
    heartbeat = options.heartbeat
    direct = sub.sink
    try:
        chunk = options.opening(announce)
        if records:
            hub.count("delivered", len(records))
            replay = chunks(records)
            yield chunk + next(replay)
            yield from replay
            # The rest of the replay, a bounded page at a time.
            while records := sub.more():
                hub.count("delivered", len(records))
                yield from chunks(records)
        else:
            yield chunk
        # A parked stream keeps nothing of its replay, nor its options.
        del records, chunk, options
        last_write = time.monotonic()
        while True:
            remaining = last_write + heartbeat - time.monotonic()
            if parks and remaining > 0 and sub.park():
                # Nothing to send: wait parked, resumed by the subscription
                # (what the publisher could not write, or the end) or when
                # the heartbeat is due.
                yield last_write + heartbeat
                fresh = sub.wait(0)
            else:
                fresh = sub.wait(remaining) if remaining > 0 else []
            if fresh is None and sub.dropped:
                return  # not even the rest of a direct write: it is cut off
            if isinstance(direct, DirectWriter) and direct.pending is not None:
                if not direct.flush():
                    return  # the client is gone
            if fresh is None:
                return
            if fresh:
                # Everything queued goes out in one write: under a burst this
                # is what lets a writer catch up instead of overflowing. Up to
                # MAX_CHUNK bytes a write, so a blocked one holds little.
                hub.count("delivered", len(fresh))
                yield from chunks(fresh)
            elif time.monotonic() - last_write < heartbeat:
                continue
            else:
                yield HEARTBEAT
            last_write = time.monotonic()
    finally:
        sub.close()
        if isinstance(direct, DirectWriter):
            direct.body = None


def chunks(records: list[Record]) -> t.Iterator[bytes]:
    """Join the records' bytes into writes of about ``MAX_CHUNK`` bytes."""
    parts: list[bytes] = []
    size = 0
    for record in records:
        data = record.event.encode()
        parts.append(data)
        size += len(data)
        if size >= MAX_CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def check_retry(retry: int | None) -> None:
    """Refuse a ``retry`` option the ``retry:`` field would refuse."""
    if retry is not None:
        Event(retry=retry)
