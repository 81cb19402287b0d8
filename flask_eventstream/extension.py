"""The :class:`EventStream` extension: configuration, publish, subscribe."""

from __future__ import annotations

import logging
import re
import typing as t
import weakref

from flask import Blueprint
from flask import current_app
from flask import Flask
from flask import has_request_context
from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import ServiceUnavailable

from . import signals
from .backends import create_backend
from .bus import Bus
from .cli import eventstream_cli
from .direct import capture_start_response
from .errors import PublishError
from .event import Event
from .monitor import Monitor
from .streaming import preflight
from .streaming import stream
from .subscription import Subscription

logger = logging.getLogger("flask_eventstream")

#: Every configuration key with its default; ``init_app`` sets each one with
#: ``app.config.setdefault``.
DEFAULTS: dict[str, t.Any] = {
    "EVENTSTREAM_BACKEND": "memory",
    "EVENTSTREAM_HISTORY": 1000,
    "EVENTSTREAM_HEARTBEAT": 15.0,
    "EVENTSTREAM_RETRY": 3000,
    "EVENTSTREAM_URL_PREFIX": "/events",
    "EVENTSTREAM_QUEUE_SIZE": 1000,
    "EVENTSTREAM_MAX_CONNECTIONS": 10000,
    "EVENTSTREAM_MAX_CHANNELS": 32,
    "EVENTSTREAM_MAX_EVENT_BYTES": 65536,
    "EVENTSTREAM_POLL_TIMEOUT": 25.0,
    "EVENTSTREAM_POLL_BATCH": 500,
    "EVENTSTREAM_CORS_ORIGINS": None,
    "EVENTSTREAM_CORS_CREDENTIALS": False,
    "EVENTSTREAM_HISTORY_TTL": None,
    "EVENTSTREAM_REDIS_PREFIX": "eventstream:",
    "EVENTSTREAM_MAX_LIFETIME": None,
    "EVENTSTREAM_SEND_TIMEOUT": 30.0,
    "EVENTSTREAM_SEND_BUFFER": None,
    "EVENTSTREAM_HISTORY_CHANNELS": 10000,
    "EVENTSTREAM_DIRECT_WRITES": True,
}

#: Channel names: letters, digits and ``_ . : -``, 1 to 128 characters. They
#: appear in URLs, Redis keys and logs, where anything else needs escaping.
CHANNEL_PATTERN = re.compile(r"\A[A-Za-z0-9_.:-]{1,128}\Z")

#: Longest cursor read from a request; ids the backends assign are far shorter.
MAX_CURSOR_LENGTH = 64
#: What a cursor from a request is made of: the digits and ``-`` of an id.
CURSOR_PATTERN = re.compile(r"\A[0-9-]+\Z")

#: The counters of :meth:`EventStream.stats`, in the order it lists them.
COUNTERS = (
    "published",
    "delivered",
    "dropped",
    "replayed",
    "resets",
    "refused",
    "revoked",
    "errors",
)

_FROM_REQUEST: t.Any = object()


def check_channel(channel: object) -> str | None:
    """Return why ``channel`` is not a valid channel name, or ``None``."""
    if not isinstance(channel, str):
        return f"A channel name must be a str, not {type(channel).__name__}."
    if CHANNEL_PATTERN.match(channel) is None:
        return (
            f"Invalid channel name {channel[:140]!r}: use 1 to 128 letters,"
            " digits, '_', '.', ':' or '-'."
        )
    return None


def _positive(config: t.Mapping[str, t.Any], key: str, kind: type) -> t.Any:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number, not {value!r}.")
    return kind(value)


class _State:
    """What one app's extension holds: its backend, bus and settings.

    It refers to the app weakly: an open stream keeps this object, and must
    not keep the app or anything of a request alive through it.
    """

    def __init__(self, app: Flask) -> None:
        config = app.config
        self._app = weakref.ref(app)
        self.logger = logger
        self.history = _positive(config, "EVENTSTREAM_HISTORY", int)
        self.heartbeat = _positive(config, "EVENTSTREAM_HEARTBEAT", float)
        self.queue_size = _positive(config, "EVENTSTREAM_QUEUE_SIZE", int)
        self.max_connections = _positive(config, "EVENTSTREAM_MAX_CONNECTIONS", int)
        self.max_channels = _positive(config, "EVENTSTREAM_MAX_CHANNELS", int)
        self.max_event_bytes = _positive(config, "EVENTSTREAM_MAX_EVENT_BYTES", int)
        self.poll_timeout = _positive(config, "EVENTSTREAM_POLL_TIMEOUT", float)
        self.poll_batch = _positive(config, "EVENTSTREAM_POLL_BATCH", int)
        self.send_timeout = _positive(config, "EVENTSTREAM_SEND_TIMEOUT", float)
        self.send_buffer: int | None = None
        if config["EVENTSTREAM_SEND_BUFFER"] is not None:
            self.send_buffer = _positive(config, "EVENTSTREAM_SEND_BUFFER", int)
        self.max_lifetime: float | None = None
        if config["EVENTSTREAM_MAX_LIFETIME"] is not None:
            self.max_lifetime = _positive(config, "EVENTSTREAM_MAX_LIFETIME", float)
        retry = config["EVENTSTREAM_RETRY"]
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(
                f"EVENTSTREAM_RETRY must be a non-negative int of milliseconds"
                f" or None, not {retry!r}."
            )
        self.retry: int | None = retry
        origins = config["EVENTSTREAM_CORS_ORIGINS"]
        if isinstance(origins, str):
            origins = [origins]
        self.cors_origins: frozenset[str] = frozenset(origins or ())
        self.cors_credentials = bool(config["EVENTSTREAM_CORS_CREDENTIALS"])
        self.direct_writes = bool(config["EVENTSTREAM_DIRECT_WRITES"])
        self.bus = Bus()
        #: Called with this worker's figures every few seconds while it holds
        #: streams (see Monitor.report): the Prometheus exporter's sync.
        self.reporters: list[t.Callable[[dict[str, t.Any]], None]] = []
        ttl = config["EVENTSTREAM_HISTORY_TTL"]
        if ttl is not None:
            ttl = _positive(config, "EVENTSTREAM_HISTORY_TTL", float)
        self.backend = create_backend(
            config["EVENTSTREAM_BACKEND"],
            self.history,
            ttl=ttl,
            prefix=config["EVENTSTREAM_REDIS_PREFIX"],
            channels=_positive(config, "EVENTSTREAM_HISTORY_CHANNELS", int),
        )
        self.backend.deliver = self.bus.deliver
        self.backend.revoke = self.revoke
        self.monitor = Monitor(self)
        self.connections = 0
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    @property
    def app(self) -> Flask | None:
        return self._app()

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def refuse(self, error: HTTPException, reason: str, *args: t.Any) -> t.NoReturn:
        """Count, log and raise a refused subscription."""
        self.count("refused")
        self.logger.info("Refused a subscription: " + reason, *args)
        raise error

    def revoke(self, channel: str) -> None:
        """End this worker's live subscriptions of ``channel``."""
        closed = 0
        for receiver in self.bus.receivers(channel):
            owner = getattr(receiver, "__self__", None)
            if isinstance(owner, Subscription) and owner.close("revoked"):
                closed += 1
        if closed:
            self.count("revoked", closed)
            self.logger.info("Closed %d subscriptions of %r.", closed, channel)


class EventStream:
    """Server-Sent Events for a Flask app.

    :param app: the app to register on; or call :meth:`init_app` later, once
        for each app this instance serves.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._states: weakref.WeakKeyDictionary[Flask, _State] = (
            weakref.WeakKeyDictionary()
        )
        self._authorize: t.Callable[[str], bool] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``: read its configuration, create
        its backend, and register the ``eventstream`` blueprint (the browser
        client and, unless turned off, the built-in endpoint).

        Every key below is set with ``app.config.setdefault``:

        - ``EVENTSTREAM_BACKEND``: ``"memory"`` or a Redis URL.
        - ``EVENTSTREAM_HISTORY``: events kept per channel for resume.
        - ``EVENTSTREAM_HISTORY_TTL``: with Redis, seconds after a channel's
          last event that its history expires; ``None`` keeps it.
        - ``EVENTSTREAM_REDIS_PREFIX``: the prefix of every Redis key.
        - ``EVENTSTREAM_HEARTBEAT``: seconds of silence before a keep-alive.
        - ``EVENTSTREAM_RETRY``: milliseconds sent as ``retry:``, or ``None``.
        - ``EVENTSTREAM_URL_PREFIX``: the built-in endpoint's prefix, or
          ``None`` to turn it off.
        - ``EVENTSTREAM_QUEUE_SIZE``: events queued for one client before it
          is dropped (it resumes from history when it reconnects).
        - ``EVENTSTREAM_SEND_TIMEOUT``: seconds a blocked write may last
          before the connection is shut down.
        - ``EVENTSTREAM_SEND_BUFFER``: each stream's ``SO_SNDBUF``, or
          ``None`` for the system's.
        - ``EVENTSTREAM_MAX_LIFETIME``: seconds after which a stream ends
          with a retry hint, or ``None``.
        - ``EVENTSTREAM_HISTORY_CHANNELS``: with the memory backend, the
          channels whose history is kept.
        - ``EVENTSTREAM_MAX_CONNECTIONS``: open subscriptions per worker.
        - ``EVENTSTREAM_MAX_CHANNELS``: channels in one subscription.
        - ``EVENTSTREAM_MAX_EVENT_BYTES``: largest encoded event ``publish``
          accepts.
        - ``EVENTSTREAM_POLL_TIMEOUT``: longest long-poll wait, in seconds.
        - ``EVENTSTREAM_POLL_BATCH``: most events in one poll answer.
        - ``EVENTSTREAM_CORS_ORIGINS``: origins allowed to read streams from
          other sites (a list, or ``"*"``); none by default.
        - ``EVENTSTREAM_CORS_CREDENTIALS``: whether those origins may send
          cookies (``Access-Control-Allow-Credentials``).
        - ``EVENTSTREAM_DIRECT_WRITES``: under gunicorn's gevent worker, let
          the publisher write an event to a waiting client's socket itself.

        :raises RuntimeError: if an ``EventStream`` is already registered on
            ``app``.
        :raises ValueError: if a configuration value is out of range.
        """
        if "eventstream" in app.extensions:
            raise RuntimeError(
                "An 'EventStream' instance is already registered on this Flask app."
                " Import and use that instance instead."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        state = _State(app)
        self._states[app] = state
        app.extensions["eventstream"] = self
        app.register_blueprint(_blueprint(app.config["EVENTSTREAM_URL_PREFIX"]))
        app.cli.add_command(eventstream_cli)
        app.after_request(preflight)
        app.wsgi_app = capture_start_response(app.wsgi_app)  # type: ignore[method-assign, assignment]

    def _state(self, app: Flask | None = None) -> _State:
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'EventStream'"
                " instance. Did you forget to call 'init_app', or did you create"
                " multiple 'EventStream' instances?"
            ) from None

    # -- publishing -------------------------------------------------------

    def publish(self, channel: str, data: t.Any, *, event: str | None = None) -> Event:
        """Store an event on ``channel`` and send it to every subscriber.

        Works wherever the app's context is active: in a request, in a CLI
        command, or in a background greenlet or thread that pushed
        ``app.app_context()``.

        :param channel: the channel name (see :data:`CHANNEL_PATTERN`).
        :param data: a ``str`` is sent as it is; anything else is serialised
            with the app's JSON provider (``app.json``).
        :param event: the event type, or ``None`` for a plain ``message``.
        :return: the stored event, with the id the backend assigned.
        :raises ValueError: for an invalid channel or event name, or an event
            larger than ``EVENTSTREAM_MAX_EVENT_BYTES``.
        :raises PublishError: if the backend cannot store the event.
        """
        state = self._state()
        problem = check_channel(channel)
        if problem is not None:
            raise ValueError(problem)
        if not isinstance(data, str):
            data = current_app.json.dumps(data)
        candidate = Event(data, event=event)
        size = len(candidate.encode())
        if size > state.max_event_bytes:
            raise ValueError(
                f"The event is {size} bytes encoded, more than"
                f" EVENTSTREAM_MAX_EVENT_BYTES ({state.max_event_bytes})."
            )
        try:
            stored = state.backend.append(channel, candidate).event
        except PublishError as error:
            state.count("errors")
            logger.warning("Publish to %r failed: %s", channel, error)
            raise
        state.count("published")
        signals.event_published.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            channel=channel,
            event=stored,
        )
        return stored

    # -- subscribing ------------------------------------------------------

    def subscribe(
        self, *channels: str, last_event_id: str | None = _FROM_REQUEST
    ) -> Subscription:
        """Return a :class:`Subscription` to ``channels``.

        Return it from a view decorated with :func:`stream` (which serves it
        as a stream, a poll or a long-poll), or iterate it.

        :param channels: one or more channel names.
        :param last_event_id: the cursor to resume after. By default, the
            request's ``Last-Event-ID`` header, else its ``lastEventId`` query
            argument; ``None`` starts with the next event.
        :raises BadRequest: for no channel, too many, or an invalid one.
        :raises Forbidden: when the :meth:`authorize` function refuses one.
        :raises ServiceUnavailable: when this worker already holds
            ``EVENTSTREAM_MAX_CONNECTIONS`` subscriptions.
        """
        state = self._state()
        if not channels:
            state.refuse(BadRequest("Subscribe to at least one channel."), "none")
        if len(channels) > state.max_channels:
            message = (
                f"{len(channels)} channels in one subscription, more than"
                f" EVENTSTREAM_MAX_CHANNELS ({state.max_channels})."
            )
            state.refuse(BadRequest(message), "%s", message)
        unique = tuple(dict.fromkeys(channels))
        for channel in unique:
            problem = check_channel(channel)
            if problem is not None:
                state.refuse(BadRequest(problem), "%s", problem)
        if self._authorize is not None:
            for channel in unique:
                if not self._authorize(channel):
                    message = f"Not allowed to subscribe to {channel!r}."
                    state.refuse(Forbidden(message), "authorize refused %r.", channel)
        if state.connections >= state.max_connections and not _short_poll():
            error = ServiceUnavailable(
                "This worker serves its most streams"
                f" (EVENTSTREAM_MAX_CONNECTIONS = {state.max_connections})."
            )
            error.retry_after = 5
            state.refuse(error, "the worker holds %d streams.", state.connections)
        if last_event_id is _FROM_REQUEST:
            last_event_id = _request_cursor() if has_request_context() else None
        return Subscription(state, unique, last_event_id)

    def close_channel(self, channel: str) -> None:
        """End every live stream, long-poll and iteration of ``channel``: on
        this worker with the memory backend, on every worker with Redis.

        Use it when access is revoked (a user logs out, leaves a room): the
        clients reconnect at once and must pass :meth:`authorize` again; those
        it still allows resume from their cursor without a gap. A stream of
        several channels ends as a whole.

        :raises ValueError: for an invalid channel name.
        :raises PublishError: if the backend cannot reach the other workers.
        """
        state = self._state()
        problem = check_channel(channel)
        if problem is not None:
            raise ValueError(problem)
        state.backend.close_channel(channel)

    def shutdown(self) -> int:
        """End every open stream of this worker, each after a last ``retry:``
        hint between once and twice ``EVENTSTREAM_RETRY`` (jittered, so its
        clients do not all come back in the same millisecond), and end at once
        any stream that opens after. Return how many streams were open.

        Under gunicorn this happens by itself when the worker stops (SIGTERM,
        a SIGHUP reload, ``max_requests``); call it from your own shutdown
        hook under other servers.
        """
        return self._state().monitor.shutdown()

    def authorize(self, fn: t.Callable[[str], bool]) -> t.Callable[[str], bool]:
        """Register ``fn(channel) -> bool``, which decides in the request
        (``current_user``, ``session`` and ``request`` are available) whether
        the client may subscribe to ``channel``. It runs for every channel of
        every subscription, on every transport and every reconnect; a
        ``False`` answer is a 403 and opens nothing.

        The built-in endpoint serves no channel until a function is
        registered.
        """
        self._authorize = fn
        return fn

    # -- figures ----------------------------------------------------------

    def stats(self) -> dict[str, t.Any]:
        """Return this worker's figures: open subscriptions, subscribers per
        channel, counters since start, and the backend's own.
        """
        state = self._state()
        return {
            "connections": state.connections,
            "channels": state.bus.subscribers(),
            "counters": dict(state.counters),
            **state.backend.stats(),
        }


def _short_poll() -> bool:
    # A poll is answered at once and holds no connection: never refused.
    return has_request_context() and request.args.get("transport") == "poll"


def _request_cursor() -> str | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.args.get("lastEventId")
    if not raw:
        return None
    if len(raw) > MAX_CURSOR_LENGTH or CURSOR_PATTERN.match(raw) is None:
        raise BadRequest(
            f"The cursor (Last-Event-ID or lastEventId) must be at most"
            f" {MAX_CURSOR_LENGTH} digits and '-'; send back an id this server"
            " sent."
        )
    return raw


def _blueprint(prefix: str | None) -> Blueprint:

    bp = Blueprint(
        "eventstream",
        __name__,
        static_folder="static",
        url_prefix=prefix if prefix is not None else "/_eventstream",
    )
    if prefix is not None:

        @bp.get("/<channel>")
        @stream
        def channel(channel: str) -> t.Any:
            events: EventStream = current_app.extensions["eventstream"]
            if events._authorize is None:
                raise Forbidden(
                    "The built-in endpoint serves no channel until an authorize"
                    " function is registered with '@events.authorize'."
                )
            return events.subscribe(channel)

    return bp
