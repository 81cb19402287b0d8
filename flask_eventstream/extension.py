"""The :class:`EventStream` extension: configuration, publish, subscribe."""

from __future__ import annotations

import logging
import os
import typing as t
import weakref

from flask import current_app
from flask import Flask
from flask import has_app_context
from flask import has_request_context

from . import signals
from .backends.base import Once
from .cli import eventstream_cli
from .errors import PublishError
from .figures import Presence
from .figures import Snapshot
from .figures import Stats
from .figures import WorkerReport
from .http import blueprint
from .http import check_secret
from .http import make_token
from .http import open_subscription
from .http import preflight
from .http import request_cursor
from .http import undecorated
from .hub import Hub
from .logs import route_log
from .server import capture_start_response
from .settings import check_channel
from .settings import check_publish
from .settings import DEFAULTS
from .settings import unknown_keys
from .setup_checks import note_setup
from .setup_checks import unread_environment
from .subscription import Subscription
from .wire import Event
from .wire import Published

logger = logging.getLogger("flask_eventstream")

_FROM_REQUEST: t.Any = object()


class EventStream:
    """Server-Sent Events for a Flask app.

    :param app: the app to register on; or call :meth:`init_app` later, once
        for each app this instance serves.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._hubs: weakref.WeakKeyDictionary[Flask, Hub] = weakref.WeakKeyDictionary()
        self._authorize: t.Callable[[str], bool] | None = None
        self._identify: t.Callable[[], str | None] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``: read its configuration, create
        its backend, and register the ``eventstream`` blueprint (the browser
        client and, unless turned off, the built-in endpoint).

        Every key that :doc:`/configuration` lists is set with
        ``app.config.setdefault``, then checked. Any other ``EVENTSTREAM_*``
        key is a logged warning naming the closest known one: a misspelt key
        would otherwise change nothing, silently.

        :raises RuntimeError: if an ``EventStream`` is already registered on
            ``app``.
        :raises ValueError: if a configuration value is out of range, naming
            the key.
        """
        if "eventstream" in app.extensions:
            raise RuntimeError(
                "An 'EventStream' instance is already registered on this Flask app."
                " Import and use that instance instead."
            )
        route_log()
        note_setup()
        for problem in unknown_keys(app.config):
            logger.warning(problem)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        for problem in unread_environment(app.config, os.environ):
            logger.warning(problem)
        hub = self._hubs[app] = Hub(app, app.config)
        app.extensions["eventstream"] = self
        weak = check_secret(app.config.get("SECRET_KEY"))
        if weak is not None:
            hub.logger.warning(weak)
        app.register_blueprint(blueprint(app.config["EVENTSTREAM_URL_PREFIX"]))
        app.cli.add_command(eventstream_cli)
        app.after_request(preflight)
        app.after_request(undecorated)
        app.wsgi_app = capture_start_response(app.wsgi_app)  # type: ignore[method-assign, assignment]

    def hub_for(self, app: Flask | None = None) -> Hub:
        """Internal, for this package's HTTP layer and CLI: not part of the
        public API, and it may change in any release. Read figures with
        :meth:`snapshot` instead.

        Return the live parts of ``app`` in this worker: its backend, bus,
        monitor and figures.

        :param app: default: the current app, or outside an app context (a
            thread, a script, a task queue) the one app this instance was
            registered on.
        :raises RuntimeError: if ``app`` is not registered with this
            instance, or none is current and it serves several.

        :meta private:
        """
        if app is None:
            app = self._app()
        try:
            return self._hubs[app]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'EventStream'"
                " instance. Did you forget to call 'init_app', or did you create"
                " multiple 'EventStream' instances?"
            ) from None

    def _app(self) -> Flask:
        if has_app_context():
            return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]
        apps = list(self._hubs.keys())
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise RuntimeError(
                "This 'EventStream' is registered on no Flask app. Create it with"
                " 'EventStream(app)' or call 'events.init_app(app)' first."
            )
        raise RuntimeError(
            f"No app context is active and this 'EventStream' serves {len(apps)}"
            " apps, so it cannot tell which one is meant. Push one first:"
            " 'with app.app_context(): events.publish(...)'."
        )

    # -- publishing -------------------------------------------------------

    def publish(
        self,
        channel: str,
        data: t.Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Store an event on ``channel`` and send it to every subscriber.

        Works in a request, in a CLI command, and outside any app context
        (a thread, a script, a task queue) when this instance serves one app;
        when it serves several, push the app's context first
        (``with app.app_context():``).

        :param channel: the channel name: 1 to 128 letters, digits and
            ``_ . : -`` (see :doc:`/publishing`).
        :param data: a ``str`` is sent as it is; anything else is serialised
            with the app's JSON provider (``app.json``).
        :param event: the event type, or ``None`` for a plain ``message``.
        :param idempotency_key: a repeat with the same key on the same
            channel within ``EVENTSTREAM_IDEMPOTENCY_WINDOW`` stores and sends
            nothing and returns the first event (a key is scoped to its
            channel: on another channel it is another event): a publish
            retried after a
            :class:`PublishError` is never stored twice (with Redis, across
            processes, atomically with the append).
        :return: the stored event, with the id the backend assigned (a
            :class:`Published`: its ``id`` is a ``str``).
        :raises ValueError: for an invalid channel, event type (``eventstream-``
            is reserved), idempotency key, size (``MAX_EVENT_BYTES``), or
            ``data`` that ``app.json`` cannot serialise (``bytes`` among them:
            decode them first).
        :raises PublishNotStored: if the backend did not store the event (a
            :class:`PublishError`): retrying cannot duplicate it.
        :raises PublishOutcomeUnknown: if the backend did not answer (a
            :class:`PublishError`): the event may have been stored; retry
            with the same ``idempotency_key``.
        """
        app = self._app()
        hub = self.hub_for(app)
        settings = hub.settings
        problem = check_channel(channel) or check_publish(event, idempotency_key)
        if problem is not None:
            raise ValueError(problem)
        if not isinstance(data, str):
            data = _serialised(app, channel, data)
        candidate = Event(data, event=event)
        size = len(candidate.encode())
        limit = settings.channel(channel).max_event_bytes
        if size > limit:
            raise ValueError(
                f"The event is {size} bytes encoded, more than the"
                f" max_event_bytes of {channel!r} ({limit}, from"
                " EVENTSTREAM_MAX_EVENT_BYTES or its namespace)."
            )
        key = idempotency_key
        once = Once(key, settings.idempotency_window) if key is not None else None
        try:
            record = hub.backend.append(channel, candidate, once)
        except PublishError as error:
            hub.count("errors")
            logger.warning("Publish to %r failed: %s", channel, error)
            raise
        if record.repeat:
            return Published.of(record.event)  # stored before: nothing new to tell
        hub.count("published")
        if not has_request_context():
            hub.check_heard()
        hub.send(signals.event_published, channel=channel, event=record.event)
        return Published.of(record.event)

    # -- subscribing ------------------------------------------------------

    def subscribe(
        self,
        *channels: str,
        last_event_id: str | None = _FROM_REQUEST,
        rewind: int | None = None,
    ) -> Subscription:
        """Return a :class:`Subscription` to ``channels``.

        Return it from a view decorated with :func:`stream` (which serves it
        as a stream, a poll or a long-poll), or iterate it.

        :param channels: one or more channel names.
        :param last_event_id: the cursor to resume after. By default, the
            request's ``Last-Event-ID`` header, else its ``lastEventId`` query
            argument; ``None`` starts with the next event.
        :param rewind: without a cursor, first send the last this many stored
            events, in id order across channels (at most ``MAX_REWIND``,
            1,000, and what the history keeps). By default the request's
            ``?rewind=``, else the largest ``rewind`` of the channels'
            namespaces, else 0. With a cursor it is ignored.
        :raises BadRequest: for no channel, too many, or an invalid one.
        :raises Forbidden: when the :meth:`authorize` function refuses one.
        :raises ServiceUnavailable: when this worker already holds
            ``EVENTSTREAM_MAX_CONNECTIONS`` subscriptions.
        """
        if last_event_id is _FROM_REQUEST:
            last_event_id = request_cursor() if has_request_context() else None
        return open_subscription(
            self.hub_for(),
            channels,
            self._authorize,
            self._identify,
            last_event_id,
            rewind,
        )

    def token(self, *channels: str, expires_in: float = 3600) -> str:
        """Return a token that lets its bearer subscribe to ``channels`` for
        ``expires_in`` seconds without :meth:`authorize`: for clients that
        send no cookie (another origin, a script). It goes in the URL as
        ``?token=`` (``EventSource`` cannot send headers) or in an
        ``Authorization: Bearer`` header. A stream it let in ends when it
        expires; the client then needs a new one. After a
        :meth:`close_channel` of one of ``channels`` it admits that channel
        no more (on every worker with Redis): a new token does.

        Signed with the app's ``SECRET_KEY`` (see :doc:`/security`). It starts
        with ``eventstream-1.``; a ``?token=`` or Bearer value that does not
        is the app's own, left to :meth:`authorize`.

        :raises ValueError: for no channel, an invalid one, or a lifetime
            that is not a positive number of seconds up to 30 days.
        :raises RuntimeError: if the app has no ``SECRET_KEY``.
        """
        with self._app().app_context():
            return make_token(channels, expires_in)

    def close_channel(self, channel: str) -> None:
        """End every live stream, long-poll and iteration of ``channel``: on
        this worker with the memory backend, on every worker with Redis.

        Use it when access is revoked (a user logs out, leaves a room): the
        clients reconnect at once and must pass :meth:`authorize` again; those
        it still allows resume from their cursor without a gap. A stream of
        several channels ends as a whole. Subscriber tokens issued before it
        (:meth:`token`) admit ``channel`` no more; a subscription whose
        :meth:`authorize` was still running ends too.

        :raises ValueError: for an invalid channel name.
        :raises PublishError: if the backend cannot reach the other workers.
        """
        hub = self.hub_for()
        problem = check_channel(channel)
        if problem is not None:
            raise ValueError(problem)
        hub.backend.close_channel(channel)

    def shutdown(self) -> int:
        """End every open stream of this worker, each after a last ``retry:``
        hint between once and twice ``EVENTSTREAM_RETRY`` (jittered, so its
        clients do not all come back in the same millisecond), and end at once
        any stream that opens after. Return how many streams were open.

        Under gunicorn this happens by itself when the worker stops (SIGTERM,
        a SIGHUP reload, ``max_requests``); call it from your own shutdown
        hook under other servers.
        """
        return self.hub_for().monitor.shutdown()

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

    def identify(self, fn: t.Callable[[], str | None]) -> t.Callable[[], str | None]:
        """Register ``fn() -> str | None``, run in the request of every
        subscription, that names its subscriber for :meth:`presence` (the
        user's id, say; at most 200 characters). ``None`` is an anonymous
        subscriber: counted, not listed. If it raises, the subscriber is
        anonymous and the error is logged.
        """
        self._identify = fn
        return fn

    def presence(self, channel: str) -> Presence:
        """Return who is subscribed to ``channel``: a :class:`Presence`,
        ``{"count": connections, "members": {member: connections}}``, where
        each open stream counts one, and a client that polls counts one for
        a poll timeout. On every worker and host with Redis (a member is gone
        within two heartbeats of its last stream closing, even if its worker
        was killed); in this process with the memory backend.

        :raises ValueError: for an invalid channel name.
        :raises BackendUnavailable: if Redis cannot be read.
        """
        hub = self.hub_for()
        problem = check_channel(channel)
        if problem is not None:
            raise ValueError(problem)
        return hub.presence.read(channel)

    @property
    def authorizer(self) -> t.Callable[[str], bool] | None:
        """The function registered with :meth:`authorize`, if any."""
        return self._authorize

    # -- figures ----------------------------------------------------------

    def stats(self) -> Stats:
        """Return this worker's figures (a :class:`Stats`): open
        subscriptions, subscribers per channel, counters since start, and the
        backend's own.
        """
        taken = self.snapshot()
        own = taken["worker"]
        stats = {
            "connections": own["connections"],
            "channels": own["channels"],
            "counters": own["counters"],
            **taken["backend"],
        }
        return t.cast(Stats, stats)  # the backend's keys are typed in Stats

    def snapshot(
        self, app: Flask | None = None, *, everywhere: bool = False
    ) -> Snapshot:
        """Return a copy of ``app``'s figures (a :class:`Snapshot`), taken
        at once: this worker's connections, channels and counters, and the
        backend's own. Changing it changes nothing here. The Prometheus
        exporter (:mod:`flask_eventstream.metrics`) and ``flask eventstream
        stats`` read it.

        :param app: default: the current app, or outside an app context the
            one app this instance was registered on.
        :param everywhere: also read, from the backend, the latest report of
            every worker (Redis: of every host) and the stored events per
            channel. That is I/O: leave it off where the figures are read
            often (a scrape).
        :raises RuntimeError: if ``app`` is not registered with this
            instance, or none is current and it serves several.
        :raises BackendUnavailable: with ``everywhere``, if the backend
            cannot be read (Redis is down).

        .. versionadded:: 0.1
        """
        hub = self.hub_for(app)
        figures = hub.figures()
        snapshot: Snapshot = {
            "worker": {
                "worker": figures["worker"],
                "connections": figures["connections"],
                "channels": dict(figures["channels"]),
                "counters": dict(figures["counters"]),
            },
            "backend": dict(hub.backend.stats()),
            "workers": None,
            "history": None,
        }
        if everywhere:
            reports = hub.backend.reports()
            snapshot["workers"] = t.cast(list[WorkerReport], reports)  # as reported
            snapshot["history"] = hub.backend.history_sizes()
        return snapshot


def _serialised(app: Flask, channel: str, data: object) -> str:
    """``data`` as ``app.json`` writes it, or a ``ValueError`` that says what
    data may be.
    """
    hint = (
        " (decode bytes to a str first)" if isinstance(data, bytes | bytearray) else ""
    )
    try:
        return app.json.dumps(data)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The data published on {channel!r} is a {type(data).__name__}"
            f" that app.json cannot serialise ({error}){hint}. Data is a str,"
            " sent as it is, or a value app.json serialises: a dict, list,"
            " number, bool or None, and what the app's JSON provider adds."
        ) from error
