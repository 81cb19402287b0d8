"""The live parts of one app in one worker: settings, backend, bus, monitor,
figures, and the guest-safe sending of signals.

The extension makes one :class:`Hub` per app; subscriptions and HTTP bodies
keep it instead of the app or the request. It holds the app weakly, so an
open stream keeps neither alive.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import typing as t
import weakref

from blinker import Signal

from . import signals
from .backends import create_backend
from .backends import Sink
from .bus import Bus
from .errors import BackendUnavailable
from .errors import PublishError
from .monitor import Monitor
from .monitor import REPORT_TTL
from .monitor import Reporter
from .monitor import worker_name
from .presence import Presence
from .server import fast_path
from .server import gunicorn_worker
from .server import Limit
from .server import stream_limit
from .settings import Settings
from .wire import Event

logger = logging.getLogger("flask_eventstream")

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
    "callback_errors",
    "gaps",
)

#: Channels whose latest revocation a worker remembers (see Hub.revoke).
REVOCATIONS_KEPT = 10000


class Revocable(t.Protocol):
    """What :meth:`Hub.revoke` ends: the owner of a bus receiver."""

    def close(self, reason: str = "closed") -> bool: ...


class Hub:
    """One app's backend, bus, monitor and figures in this worker.

    :param app: the app (held weakly; the sender of every signal).
    :param config: its configuration, with every ``EVENTSTREAM_*`` key set.
    :raises ValueError: for a configuration value out of range.
    """

    def __init__(self, app: object, config: t.Mapping[str, t.Any]) -> None:
        self._app = weakref.ref(app)
        self.logger = logger
        self.settings = settings = Settings(config)
        self.bus = Bus()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: Open subscriptions (streams and long-polls) in this worker.
        self.connections = 0
        #: Whether this process ever opened a subscription.
        self.served = False
        self._warned_unheard = False
        self.backend = create_backend(
            settings.backend_url,
            settings.history,
            ttl=settings.history_ttl,
            prefix=settings.redis_prefix,
            channels=settings.history_channels,
            sink=Sink(self.bus.deliver, self.revoke, self.lose),
            retention=settings.retention,
            pool_size=settings.redis_pool_size,
            timeout=settings.redis_timeout,
            batch_timeout=settings.redis_batch_timeout,
            idle_check=settings.redis_idle_check,
        )
        # Revocations seen by this worker, numbered, so that a subscription
        # whose authorize ran meanwhile can tell (see revoked_since).
        self._revocations = 0
        self._revoked: collections.OrderedDict[str, int] = collections.OrderedDict()
        #: Revocations up to this number may be forgotten: assume any was.
        self._revoked_floor = 0
        #: Called with this worker's figures every few seconds while it holds
        #: streams: the backend's (``flask eventstream stats``), then any added
        #: later (the Prometheus exporter's sync).
        self.reporters: list[Reporter] = [self._report_to_backend]
        self.monitor = Monitor(settings, self.figures, self.reporters)
        #: Who is connected, by channel (see :meth:`EventStream.presence`).
        self.presence = Presence(self.backend, settings, self.announce, logger)
        self._limit: tuple[int, Limit] | None = None
        #: Streams and long-polls that keep a greenlet or thread of the
        #: server (not parked).
        self.held = 0
        if gunicorn_worker() is not None:
            self.limit()  # said at the worker's start, if it is lowered

    def limit(self) -> Limit:
        """How many streams this worker holds at once (see
        :func:`~flask_eventstream.server.stream_limit`), found once per worker.
        """
        if self._limit is None or self._limit[0] != os.getpid():
            settings = self.settings
            parks = settings.direct_writes and fast_path() is not None
            found = stream_limit(settings.max_connections, parks=parks)
            self._limit = (os.getpid(), found)
        return self._limit[1]

    @property
    def app(self) -> t.Any:
        """The app, or ``None`` once it is gone."""
        return self._app()

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def send(self, signal: Signal, **kwargs: t.Any) -> None:
        """Send ``signal`` from the app, each receiver as a guest: one that
        raises is logged and counted, and the rest run.
        """
        failed = signals.send(signal, self.app, **kwargs)
        if failed:
            self.count("callback_errors", failed)

    def revoke(self, channel: str) -> None:
        """End this worker's live subscriptions of ``channel``, and remember
        it for those still being authorized.
        """
        self._revocations += 1
        self._revoked[channel] = self._revocations
        self._revoked.move_to_end(channel)
        if len(self._revoked) > REVOCATIONS_KEPT:
            _, forgotten = self._revoked.popitem(last=False)
            self._revoked_floor = max(self._revoked_floor, forgotten)
        closed = self._end(channel, "revoked")
        if closed:
            self.count("revoked", closed)
            self.logger.info("Closed %d subscriptions of %r.", closed, channel)

    def revocation_mark(self) -> int:
        """The revocations seen so far: take it before ``authorize`` runs."""
        try:
            self.backend.follow_closes()
        except BackendUnavailable:
            # A close may be missed: a stream that opens anyway (the backend
            # came back) ends as revoked and passes authorize again. The
            # backend's own errors come where the subscription reads.
            return -1
        return self._revocations

    def revoked_since(self, mark: int, channels: t.Iterable[str]) -> bool:
        """Whether one of ``channels`` was revoked after ``mark``."""
        if mark < self._revoked_floor:
            return True
        return any(self._revoked.get(channel, 0) > mark for channel in channels)

    def lose(self, channel: str | None, reason: str) -> None:
        """The backend may have missed events of ``channel`` (``None``: of
        any, or a revocation) for this worker: end the subscriptions
        concerned; their clients resume from history or get a reset.
        """
        if channel is None:
            # A revocation may be among what was missed.
            self._revocations += 1
            self._revoked_floor = self._revocations
        closed = self._end(channel, reason)
        self.count("gaps", closed)
        self.logger.warning(
            "Ended %d subscriptions of %s (%s).",
            closed,
            channel or "every channel",
            reason,
        )

    def lagged(self, name: str, channel: str, id: str | None) -> None:
        """Count and log a subscription ended because the event of
        ``channel`` before ``id`` never reached it.
        """
        self.count("gaps")
        self.logger.warning(
            "Ended %s: an event of %r before %s did not reach it; the client"
            " resumes from history or gets a reset.",
            name,
            channel,
            id,
        )

    def _end(self, channel: str | None, reason: str) -> int:
        channels = [channel] if channel is not None else list(self.bus.subscribers())
        closed = 0
        for name in channels:
            for receiver in self.bus.receivers(name):
                owner: Revocable | None = getattr(receiver, "__self__", None)
                if owner is not None and owner.close(reason):
                    closed += 1
        return closed

    def announce(self, channel: str, kind: str, member: str) -> None:
        """Send ``eventstream-join`` or ``-leave`` on ``channel``, if its
        namespace asks for them. Stored like any event: a client that
        reconnects gets those it missed.
        """
        if not self.settings.channel(channel).presence:
            return
        data = json.dumps({"member": member}, separators=(",", ":"))
        try:
            self.backend.append(channel, Event(data, event=f"eventstream-{kind}"))
        except PublishError as error:
            self.count("errors")
            self.logger.warning(
                "Could not announce %r %s %r: %s", member, kind, channel, error
            )

    def check_heard(self) -> None:
        """Warn, once, when the memory backend publishes in a process that
        serves no streams (a script, a task worker): nobody can hear it.
        """
        if self._warned_unheard or self.served or self.settings.backend_url != "memory":
            return
        if gunicorn_worker() is not None:
            return
        self._warned_unheard = True
        if "gunicorn.arbiter" in sys.modules:  # gunicorn's master, no worker
            self.logger.warning(
                "Published with the memory backend in gunicorn's master process,"
                " which serves no streams: the app was imported there"
                " (--preload), and what it started at import (a thread, a loop)"
                " runs there, heard by no client. Remove --preload."
            )
            return
        self.logger.warning(
            "Published with the memory backend in a process that serves no"
            " streams: the memory backend reaches only the clients of this"
            " process, so no client will receive it. Publish from the server"
            " process, or use a Redis backend (EVENTSTREAM_BACKEND) to publish"
            " from scripts and task queues."
        )

    def figures(self) -> dict[str, t.Any]:
        """This worker's figures, as reported to the backend."""
        return {
            "worker": worker_name(),
            "connections": self.connections,
            "channels": self.bus.subscribers(),
            "counters": dict(self.counters),
        }

    def _report_to_backend(self, figures: dict[str, t.Any]) -> None:
        self.backend.report(figures["worker"], figures, REPORT_TTL)
