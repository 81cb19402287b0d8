"""The :func:`stream` decorator: turns a view into a ``text/event-stream``.

A view decorated with :func:`stream` returns either

- a :class:`Subscription` (from :meth:`EventStream.subscribe`): served as an
  SSE stream, or as a poll or long-poll answer (``?transport=``). The stream
  keeps no request context: it needs none, and each one costs memory for as
  long as the client stays connected;
- an iterable, usually a generator: each item (:class:`Event`, ``str``,
  ``bytes`` already encoded, or a ``dict`` of :class:`Event` fields) is sent
  as it comes. The generator runs in a thread (a greenlet under gevent) of
  its own with a copy of the request context, so it can use ``request``,
  ``session`` and ``g``; that context stays alive as long as the stream. While
  the generator is busy the stream still sends heartbeats;
- a :class:`~flask.Response`, sent as it is (return ``("", 204)`` to tell a
  browser to stop reconnecting).

Gunicorn sends the response head only with the first chunk of the body, so
every stream starts with one at once (a ``retry:`` line, or a comment): the
browser's ``open`` event does not wait for the first event.
"""

from __future__ import annotations

import functools
import queue
import socket
import threading
import time
import typing as t

from flask import current_app
from flask import request
from flask import Response
from flask.globals import request_ctx
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from .backends.base import Record
from .direct import DirectWriter
from .errors import BackendUnavailable
from .event import Event
from .monitor import jittered
from .monitor import shut_down_socket
from .subscription import opened_here
from .subscription import Subscription

if t.TYPE_CHECKING:
    from .extension import _State

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: A comment line: keeps proxies and the client's connection alive, and finds
#: a gone client when the write fails. No blank line follows, so no client
#: dispatches anything.
HEARTBEAT = b":\n"

TRANSPORTS = ("eventsource", "poll", "longpoll")

#: The most bytes joined into one write (one event larger than this goes out
#: whole): what a client that stopped reading holds in a blocked write.
MAX_CHUNK = 256 * 1024


@t.overload
def stream(view: F) -> F: ...


@t.overload
def stream(
    *,
    heartbeat: float | None = None,
    retry: int | None = None,
    headers: t.Mapping[str, str] | None = None,
) -> t.Callable[[F], F]: ...


def stream(
    view: F | None = None,
    *,
    heartbeat: float | None = None,
    retry: int | None = None,
    headers: t.Mapping[str, str] | None = None,
) -> F | t.Callable[[F], F]:
    """Serve a view as Server-Sent Events; use bare or with options.

    :param heartbeat: seconds of silence before a keep-alive comment; default
        ``EVENTSTREAM_HEARTBEAT``.
    :param retry: the reconnection delay in milliseconds sent to the client
        when the stream opens; default ``EVENTSTREAM_RETRY``.
    :param headers: extra response headers.

    .. versionadded:: 0.1
    """
    if heartbeat is not None and not heartbeat > 0:
        raise ValueError(f"heartbeat must be a positive number, not {heartbeat!r}.")
    if retry is not None:
        Event(retry=retry)  # the same rule as the field: a non-negative int

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            rv = fn(*args, **kwargs)
            return respond(rv, heartbeat=heartbeat, retry=retry, headers=headers)

        wrapper._eventstream = True  # type: ignore[attr-defined]
        return t.cast(F, wrapper)

    if view is not None:
        return decorator(view)
    return decorator


def respond(
    rv: t.Any,
    *,
    heartbeat: float | None = None,
    retry: int | None = None,
    headers: t.Mapping[str, str] | None = None,
) -> t.Any:
    """Turn what a :func:`stream` view returned into its response."""
    if isinstance(rv, (BaseResponse, tuple)):
        return rv
    state = current_app.extensions["eventstream"]._state()
    options = _Options(state, heartbeat, retry)
    transport = request.args.get("transport", "eventsource")
    if transport not in TRANSPORTS:
        raise BadRequest(
            f"Unknown transport {transport[:40]!r}: use one of {', '.join(TRANSPORTS)}."
        )
    if isinstance(rv, Subscription):
        if transport != "eventsource":
            from .polling import poll_response

            return poll_response(rv, options, longpoll=transport == "longpoll")
        try:
            # Connect and read history now, in the view: a failure is still
            # an answer, and the body starts with what it read.
            records, announce = rv.open()
        except BackendUnavailable as error:
            rv.close("unavailable")
            state.count("errors")
            state.logger.warning("Stream of %s not opened: %s", rv, error)
            # 200, a retry hint and the end: EventSource gives up for good on
            # any other status, and this must be a pause, not the end.
            pause = options.opening(None) + b": the backend is unavailable\n"
            return sse_response([pause], state, headers)
        gen = _subscription_body(rv, options, records, announce)
        body = Body(gen, rv.close, state, name=repr(rv), retry=options.retry)
        rv._on_drop = body.cut
        if state.direct_writes:
            # Used only once the stream waits, so after the head and the
            # opening are written: the publisher's writes come after them.
            rv._writer = DirectWriter.find(request.environ, body)
    elif isinstance(rv, (str, bytes, dict)) or not hasattr(rv, "__iter__"):
        raise TypeError(
            "A view decorated with @stream must return a Subscription, an"
            f" iterable of events (a generator), or a Response, not"
            f" {type(rv).__name__}."
        )
    else:
        if transport != "eventsource":
            raise BadRequest(
                "This stream is produced by a generator view and cannot be polled:"
                " only views that return 'events.subscribe(...)' answer polls."
            )
        runner = _Runner(iter(rv), options)
        name = f"the generator view {request.path}"
        gen = _generator_body(runner, options)
        body = Body(gen, runner.stop, state, name=name, retry=options.retry)
    return sse_response(body, state, headers)


def sse_response(
    body: t.Iterable[bytes], state: _State, headers: t.Mapping[str, str] | None
) -> Response:
    # direct_passthrough: the chunks are bytes already, and the server gets
    # the iterator itself, with nothing of the Response around it to keep.
    response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    cors_headers(response, state)
    if headers:
        response.headers.update(headers)
    return response


def cors_headers(response: BaseResponse, state: _State) -> None:
    """Let the request's origin read the answer, if it is configured; and
    answer a preflight, which asks whether ``Last-Event-ID`` may be sent.
    """
    origin = request.headers.get("Origin")
    if origin is None or not state.cors_origins:
        return
    response.vary.add("Origin")
    if "*" in state.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in state.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        if state.cors_credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"
    else:
        return
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = "Last-Event-ID"
        response.headers["Access-Control-Max-Age"] = "600"


def preflight(response: BaseResponse) -> BaseResponse:
    """``after_request``: CORS headers on the automatic ``OPTIONS`` answer of
    a :func:`stream` view (Flask answers it without calling the view).
    """
    if request.method == "OPTIONS" and request.endpoint is not None:
        view = current_app.view_functions.get(request.endpoint)
        if getattr(view, "_eventstream", False):
            cors_headers(response, current_app.extensions["eventstream"]._state())
    return response


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
        "_monitor",
        "_retry",
        "name",
        "sse",
        "socket",
        "started",
        "writing_since",
        "ending",
        "__weakref__",
    )

    def __init__(
        self,
        gen: t.Generator[bytes, None, None],
        wake: t.Callable[[str], object],
        state: _State,
        *,
        name: str,
        retry: int | None = None,
        sse: bool = True,
    ) -> None:
        self._gen = gen
        self._wake = wake
        self._busy = False
        self._retry = retry
        #: What the stream serves, for the log.
        self.name = name
        #: An event stream (the monitor's lifetime and last retry hint apply),
        #: not a long-poll.
        self.sse = sse
        #: The client's socket, when the server exposes it (gunicorn, Werkzeug).
        self.socket = client_socket()
        if state.send_buffer is not None and self.socket is not None:
            # Bounds what the kernel holds for a client that stopped reading
            # (by default it grows to net.ipv4.tcp_wmem's maximum).
            self.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, state.send_buffer
            )
        self.started = time.monotonic()
        #: When the server was handed the chunk it is writing; ``None`` while
        #: the body waits for its next one.
        self.writing_since: float | None = None
        #: Why the stream was ended from outside, if it was.
        self.ending: str | None = None
        self._monitor = state.monitor
        self._monitor.add(self)

    def __iter__(self) -> Body:
        return self

    def __next__(self) -> bytes:
        self.writing_since = None
        self._busy = True
        try:
            chunk = next(self._gen)
        except StopIteration:
            if self.ending not in ("shutdown", "lifetime") or not self.sse:
                raise
            self.sse = False  # one hint, then the end
            chunk = jittered(self._retry)
        finally:
            self._busy = False
        self.writing_since = time.monotonic()
        return chunk

    def close(self) -> None:
        self._monitor.discard(self)
        self.writing_since = None
        if not self._busy:
            self._gen.close()
        # Also when the body never started (a HEAD request, a failed write of
        # the head): what the view opened is closed all the same.
        self._wake("closed")

    def end(self, reason: str) -> None:
        """End the stream after what it is writing: ``"shutdown"`` and
        ``"lifetime"`` add a jittered ``retry:`` hint.
        """
        if self.ending is None:
            self.ending = reason
        self._wake(reason)

    def abort(self, reason: str) -> None:
        """End the stream and shut its connection down: its client is not
        reading, and the write it blocks would never finish.
        """
        state = self._monitor._state
        state.count("dropped")
        state.logger.warning(
            "Dropped the stream of %s (%s): a write blocked longer than"
            " EVENTSTREAM_SEND_TIMEOUT; the client resumes from history when"
            " it reconnects.",
            self.name,
            reason,
        )
        self.end(reason)
        self.cut()

    def cut(self) -> None:
        """Shut the connection down if a write to it is blocked (a dropped
        client that stopped reading), which frees the writer at once.
        """
        if self.writing_since is not None and self.socket is not None:
            shut_down_socket(self.socket)


def client_socket() -> t.Any:
    """The request's client socket, where the server exposes one."""
    environ = request.environ
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


class _Options:
    __slots__ = ("heartbeat", "retry")

    def __init__(self, state: _State, heartbeat: float | None, retry: int | None):
        self.heartbeat = heartbeat if heartbeat is not None else state.heartbeat
        self.retry = retry if retry is not None else state.retry

    def opening(self, announce: str | None) -> bytes:
        """The first chunk: ``retry:`` and the id a cursorless client resumes
        from, as a block with no data (it dispatches nothing); else a comment.
        """
        fields = ""
        if self.retry is not None:
            fields += f"retry: {self.retry}\n"
        if announce is not None:
            fields += f"id: {announce}\n"
        return (fields + "\n").encode() if fields else HEARTBEAT


def _subscription_body(
    sub: Subscription,
    options: _Options,
    records: list[Record],
    announce: str | None,
) -> t.Generator[bytes, None, None]:
    state = sub._state
    heartbeat = options.heartbeat
    try:
        chunk = options.opening(announce)
        if records:
            state.count("delivered", len(records))
            replay = _chunks(records)
            yield chunk + next(replay)
            yield from replay
        else:
            yield chunk
        direct = sub._writer
        last_write = time.monotonic()
        while True:
            remaining = last_write + heartbeat - time.monotonic()
            fresh = sub.wait(remaining) if remaining > 0 else []
            if direct is not None and direct.pending is not None:
                if not direct.flush():
                    return  # the client is gone
            if fresh is None:
                return
            if fresh:
                # Everything queued goes out in one write: under a burst this
                # is what lets a writer catch up instead of overflowing. Up to
                # MAX_CHUNK bytes a write, so a blocked one holds little.
                state.count("delivered", len(fresh))
                yield from _chunks(fresh)
            elif time.monotonic() - last_write < heartbeat:
                continue
            else:
                yield HEARTBEAT
            last_write = time.monotonic()
    finally:
        sub.close()
        if sub._writer is not None:
            sub._writer.body = None
            sub._writer = None


def _chunks(records: list[Record]) -> t.Iterator[bytes]:
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


_END = object()


class _Runner:
    """Runs a generator view in a thread (a greenlet under gevent) of its own,
    so the stream can send heartbeats while the view's code waits.
    """

    def __init__(self, items: t.Iterator[t.Any], options: _Options) -> None:
        self.items = items
        # A copy of the request context, pushed in the runner's thread, as
        # Flask's copy_current_request_context does.
        self.ctx = request_ctx.copy()
        self.chunks: queue.Queue[t.Any] = queue.Queue(maxsize=64)
        self.stopped = False
        self.opened: list[Subscription] = []
        self.heartbeat = options.heartbeat
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, reason: str = "closed") -> None:
        """Stop at the generator's next item; close its subscriptions now, so
        one the generator waits on ends at once.
        """
        self.stopped = True
        for sub in list(self.opened):
            sub.close(reason)
        try:  # wake the stream if it waits for the next item
            self.chunks.put_nowait(_END)
        except queue.Full:
            pass

    def _put(self, chunk: t.Any) -> bool:
        while not self.stopped:
            try:
                self.chunks.put(chunk, timeout=self.heartbeat)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        opened_here.set(self.opened)
        items = self.items
        try:
            with self.ctx:
                try:
                    for item in items:
                        if self.stopped or not self._put(encode_item(item)):
                            break
                except BaseException as error:  # handed to the stream, raised there
                    self._put(error)
                    return
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
        finally:
            for sub in self.opened:
                sub.close()
            self._put(_END)

    def get(self, timeout: float) -> t.Any:
        try:
            return self.chunks.get(timeout=timeout)
        except queue.Empty:
            return None


def _generator_body(
    runner: _Runner, options: _Options
) -> t.Generator[bytes, None, None]:
    heartbeat = options.heartbeat
    try:
        runner.start()
        yield options.opening(None)
        last_write = time.monotonic()
        item = None
        while True:
            if item is None:
                item = runner.get(max(0.0, last_write + heartbeat - time.monotonic()))
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if item is None:
                yield HEARTBEAT
            else:
                chunks = [item]
                item = None
                while True:  # coalesce what is already waiting into one write
                    try:
                        more = runner.chunks.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(more, bytes):
                        item = more  # an end or an error: after this write
                        break
                    chunks.append(more)
                yield b"".join(chunks)
            last_write = time.monotonic()
    finally:
        runner.stop()


def encode_item(item: t.Any) -> bytes:
    """Encode one item a generator view yielded."""
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return Event(item).encode()
    if isinstance(item, dict):
        fields = dict(item)
        data = fields.get("data", "")
        if not isinstance(data, str):
            fields["data"] = current_app.json.dumps(data)
        try:
            return Event(**fields).encode()
        except TypeError as error:
            raise TypeError(
                f"A dict yielded by a stream view holds Event fields (data, event,"
                f" id, retry, comment): {error}"
            ) from None
    raise TypeError(
        "A stream view yields Event, str, bytes or dict items, not"
        f" {type(item).__name__}."
    )
