"""The :func:`stream` decorator: what a view returns, served by transport.

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
- a response: a :class:`~flask.Response`, or a ``str``, ``bytes``, ``dict``
  or ``tuple`` that Flask makes one of, as from any view (return
  ``("", 204)`` to tell a browser to stop reconnecting).
"""

from __future__ import annotations

import functools
import logging
import types
import typing as t

from flask import current_app
from flask import request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from ..errors import BackendUnavailable
from ..server import client_socket
from ..subscription import Subscription
from ..wire import Event
from .admission import admit_generator
from .context import current_hub
from .cors import STREAM_VIEW
from .generator import Runner
from .polling import poll_response
from .polling import refuse_poll
from .sse import Options
from .sse import retry_option
from .sse import sse_response
from .sse import stream_response
from .sse import unavailable_response
from .stream import jittered
from .stream import Stream

logger = logging.getLogger("flask_eventstream")

#: What a generator view may yield: an :class:`Event`, a ``str`` (the data),
#: ``bytes`` already encoded, or a mapping of :class:`Event` fields.
StreamItem = Event | str | bytes | t.Mapping[str, t.Any]

#: What a view decorated with :func:`stream` may return: a subscription, an
#: iterable of items (a generator), or anything Flask makes a response of.
StreamReturnValue = Subscription | t.Iterable[StreamItem] | ResponseReturnValue

P = t.ParamSpec("P")
Q = t.ParamSpec("Q")

#: A view :func:`stream` decorates, typed by what it returns.
StreamView = t.Callable[P, StreamReturnValue]

#: The decorated view: a Flask route callable with the view's parameters.
RouteView = t.Callable[P, ResponseReturnValue]

TRANSPORTS = ("eventsource", "poll", "longpoll")


@t.overload
def stream(view: StreamView[P]) -> RouteView[P]: ...


@t.overload
def stream(
    *,
    heartbeat: float | None = None,
    retry: float | None = None,
    headers: t.Mapping[str, str] | None = None,
    announce: bool = True,
) -> t.Callable[[StreamView[P]], RouteView[P]]: ...


def stream(
    view: StreamView[P] | None = None,
    *,
    heartbeat: float | None = None,
    retry: float | None = None,
    headers: t.Mapping[str, str] | None = None,
    announce: bool = True,
) -> RouteView[P] | t.Callable[[StreamView[Q]], RouteView[Q]]:
    """Serve a view as Server-Sent Events; use bare or with options.

    The view returns a :class:`Subscription`, an iterable (a generator) of
    :class:`Event`, ``str``, ``bytes`` or ``dict`` items, or a response; for
    a type checker, the decorated view is a Flask route with the view's
    parameters (annotate a generator view ``-> Iterator[Event]``).

    :param heartbeat: seconds of silence before a keep-alive comment; default
        ``EVENTSTREAM_HEARTBEAT``.
    :param retry: the reconnection delay in seconds sent to the client (as
        ``retry:``, in milliseconds) when the stream opens; default
        ``EVENTSTREAM_RETRY``. For one release a value of 100 or more is
        read as milliseconds, with a :class:`DeprecationWarning`.
    :param headers: extra response headers.
    :param announce: send a client that comes without a cursor the id it
        would resume from, as an ``id:`` line and a blank line before any
        event, so that a browser that reconnects before the first event
        misses nothing. Some decoders (httpx-sse 0.4) turn that block into a
        message with empty data: ``False`` leaves it out, and such a client
        that reconnects before the first event starts from the events after
        it reconnected.

    .. versionadded:: 0.1
    """
    if heartbeat is not None and not heartbeat > 0:
        raise ValueError(f"heartbeat must be a positive number, not {heartbeat!r}.")
    milliseconds = retry_option(retry)

    def decorator(fn: StreamView[Q], /) -> RouteView[Q]:
        @functools.wraps(fn)
        def wrapper(*args: Q.args, **kwargs: Q.kwargs) -> ResponseReturnValue:
            try:
                rv = fn(*args, **kwargs)
            except BackendUnavailable as error:
                # Raised by subscribe() itself (checking a token): answered
                # as an outage found later is, never a 500.
                return unavailable(error, heartbeat, milliseconds, headers)
            return respond(
                rv,
                heartbeat=heartbeat,
                retry=milliseconds,
                headers=headers,
                announce=announce,
            )

        setattr(wrapper, STREAM_VIEW, True)
        return wrapper

    if view is not None:
        return decorator(view)
    return decorator


def unavailable(
    error: BackendUnavailable,
    heartbeat: float | None,
    retry: int | None,
    headers: t.Mapping[str, str] | None,
) -> ResponseReturnValue:
    """The answer when the backend cannot be reached before a subscription
    opened: a stream's pause (``EventSource`` retries), a poll's 503.
    """
    hub = current_hub()
    if request.args.get("transport", "eventsource") == "eventsource":
        options = Options(hub, heartbeat, retry, True)
        return unavailable_response(hub, options, headers, request.path)
    refuse_poll(hub, request.path, error)


def respond(
    rv: t.Any,
    *,
    heartbeat: float | None = None,
    retry: int | None = None,
    headers: t.Mapping[str, str] | None = None,
    announce: bool = True,
) -> ResponseReturnValue:
    """Turn what a :func:`stream` view returned into its response
    (``retry`` in milliseconds, as sent).
    """
    if isinstance(rv, (BaseResponse, tuple, str, bytes, dict)):
        # A response, as Flask makes one from any view's value.
        return t.cast(ResponseReturnValue, rv)
    hub = current_hub()
    options = Options(hub, heartbeat, retry, announce)
    transport = request.args.get("transport", "eventsource")
    if transport not in TRANSPORTS:
        raise BadRequest(
            f"Unknown transport {transport[:40]!r}: use one of {', '.join(TRANSPORTS)}."
        )
    if isinstance(rv, Subscription):
        if transport != "eventsource":
            return poll_response(rv, options, longpoll=transport == "longpoll")
        return stream_response(rv, options, headers)
    if not hasattr(rv, "__iter__"):
        raise TypeError(
            "A view decorated with @stream must return a Subscription, an"
            " iterable of events (a generator), or a response (a Response, or"
            " a str, bytes, dict or tuple as any Flask view), not"
            f" {type(rv).__name__}."
        )
    if transport != "eventsource":
        raise BadRequest(
            "This stream is produced by a generator view and cannot be polled:"
            " only views that return 'events.subscribe(...)' answer polls."
        )
    if hub.monitor.stopping:
        return sse_response([jittered(options.retry)], hub, headers)
    admit_generator(hub)
    name = f"the generator view {request.path}"
    runner = Runner(iter(rv), hub, name, options)
    # Watched from now on: a stop while the generator starts ends it too.
    body = Stream(
        hub,
        runner,
        name=name,
        heartbeat=options.heartbeat,
        retry=options.retry,
        socket=client_socket(request.environ, hub.settings.send_buffer),
    )
    # Run to the first item before the head goes out: a refusal raised
    # before it is answered with its own status.
    error = runner.first()
    if error is not None:
        body.close()
        if isinstance(error, BackendUnavailable):
            return unavailable_response(hub, options, headers, name)
        raise error  # an HTTP error is the answer; anything else, the view's bug
    return sse_response(body, hub, headers)


def undecorated(response: BaseResponse) -> BaseResponse:
    """``after_request``: a stream served without :func:`stream` is a mistake
    that shows only as an empty page or a bare ``error`` in the browser: say
    how to fix it. A generator that yields :class:`Event` objects would fail
    in the server with ``... is not a byte``: it fails with that advice
    instead. A view that streamed HTML to an ``EventSource`` gets it in the
    log, and is left alone: any client may send that ``Accept`` header, to
    any URL.
    """
    # Cheapest tests first: this runs after every request of the app.
    if not response.is_streamed:
        return response
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, STREAM_VIEW, False):
        return response
    if isinstance(response.response, types.GeneratorType):
        response.response = _without_events(response.response, request.endpoint)
    if response.mimetype == "text/html" and "text/event-stream" in request.headers.get(
        "Accept", ""
    ):
        logger.warning(
            "The view %r streamed text/html to an EventSource: if it is a"
            " stream, decorate it with @stream (below the route decorator, so"
            " that the route registers the decorated view).",
            request.endpoint,
        )
    return response


def _without_events(
    items: t.Generator[t.Any, None, None], endpoint: str | None
) -> t.Iterator[t.Any]:
    """``items``, refusing an :class:`Event`: only :func:`stream` frames them."""
    try:
        for item in items:
            if isinstance(item, Event):
                raise TypeError(
                    f"The view {endpoint!r} yielded {item!r} but is not a"
                    " stream: decorate it with @stream (below the route"
                    " decorator, so that the route registers the decorated view)."
                )
            yield item
    finally:
        items.close()
