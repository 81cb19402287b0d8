"""The open streams of one app in one worker, and what ends them from outside.

A stream's own loop ends it when its client leaves or its subscription ends.
The monitor ends the others:

- every stream, when the worker stops: gunicorn's SIGTERM, the old workers of
  a SIGHUP reload, a ``max_requests`` restart. Each gets a last ``retry:``
  hint, jittered, so its clients come back to the new workers spread out
  rather than in one burst, and the worker exits well inside
  ``graceful_timeout`` instead of waiting for clients that never leave;
- a stream older than ``EVENTSTREAM_MAX_LIFETIME``, so long-lived connections
  rebalance across workers;
- a stream whose write has been blocked longer than
  ``EVENTSTREAM_SEND_TIMEOUT``: its client keeps the connection open but does
  not read. Its socket is shut down, which fails the blocked write, so the
  greenlet (or thread) and its buffers are freed.

Under gunicorn the monitor finds the worker through its ``SIGTERM`` handler
and watches its ``alive`` flag, the one every kind of stop clears; under
other servers call :meth:`EventStream.shutdown` yourself.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
import typing as t
import weakref

from .departures import Departures
from .server import graceful_timeout
from .server import gunicorn_worker
from .settings import Settings
from .setup_checks import check_server
from .signals import EndReason

logger = logging.getLogger("flask_eventstream")

#: Seconds between two looks at the streams and the worker.
PERIOD = 0.25

#: Seconds between two reports of this worker's figures to the backend (for
#: ``flask eventstream stats``), and how long one stays valid.
REPORT_PERIOD = 2.0
REPORT_TTL = 10.0
#: Streams checked between two switches to other work.
SLICE = 500
#: The most seconds between two passes over every stream for blocked writes.
SCAN = 2.0


class Watched(t.Protocol):
    """What the monitor needs of a stream body."""

    #: An event stream (lifetime applies), not a long-poll.
    sse: bool
    #: When the stream opened (``time.monotonic()``).
    started: float
    #: When the write in progress began, or ``None``.
    writing_since: float | None
    #: The client's socket, if the server exposes it.
    socket: t.Any

    def end(self, reason: EndReason) -> None: ...

    def abort(self, reason: EndReason) -> None: ...


#: What ends something at a deadline: a stream's ``end``, a subscription's
#: ``close``.
Ender = t.Callable[[EndReason], object]


#: Called with this worker's figures every :data:`REPORT_PERIOD` seconds.
Reporter = t.Callable[[dict[str, t.Any]], None]


class Monitor:
    """One per app and worker: the live stream bodies, and a thread (a
    greenlet under gevent) that runs while there are any.

    :param settings: the app's lifetime and send timeout.
    :param figures: returns this worker's figures, for the reporters.
    :param reporters: each called with the figures; the list may grow later.
    """

    def __init__(
        self,
        settings: Settings,
        figures: t.Callable[[], dict[str, t.Any]],
        reporters: list[Reporter],
    ) -> None:
        self.settings = settings
        self.figures = figures
        self.reporters = reporters
        self.bodies: set[Watched] = set()
        self.departures: Departures[Watched] = Departures()
        self.stopping = False
        self._lock = threading.Lock()
        # When each stream with a lifetime and each subscription with a token
        # is due to end: the monitor looks at those due, not at every stream
        # four times a second.
        self._deadlines: list[
            tuple[float, int, weakref.WeakMethod[Ender], EndReason]
        ] = []
        self._order = itertools.count()
        self._scanned = -math.inf  # never: the first check scans
        self._running = False
        #: When gunicorn stops this worker: the streams still writing an
        #: event are cut before it kills them (it would write an error
        #: response into the event).
        self._cut_at: float | None = None
        self._pid = 0
        self._checked = 0  # the pid whose server was checked

    def add(self, body: Watched) -> None:
        """Watch ``body``; end it at once when the worker is stopping (a
        request that came on a kept-alive connection after the stop).
        """
        if self.stopping:
            body.end(EndReason.SHUTDOWN)
        with self._lock:
            self.bodies.add(body)
            self.departures.add(body, body.socket)
        lifetime = self.settings.max_lifetime
        if lifetime is not None and body.sse:
            self._schedule(body.end, body.started + lifetime, EndReason.LIFETIME)
        if not self._running or self._pid != os.getpid():
            self._start()
        if self._checked != os.getpid():
            self._checked = os.getpid()  # once per worker, at its first stream
            check_server(self.settings.backend_url)

    def expire(self, end: Ender, at: float) -> None:
        """Call ``end("expired")`` at ``at`` (Unix time): a subscriber
        token's expiry, for whatever serves the subscription.
        """
        self._schedule(end, time.monotonic() + at - time.time(), EndReason.EXPIRED)

    def _schedule(self, end: Ender, when: float, reason: EndReason) -> None:
        # A weak reference: an ended stream is not kept until its deadline.
        entry = (when, next(self._order), weakref.WeakMethod(end), reason)
        with self._lock:
            heapq.heappush(self._deadlines, entry)

    def moved(self, body: Watched) -> None:
        """Watch ``body``'s new socket (its connection was taken over)."""
        with self._lock:
            self.departures.discard(body)
            self.departures.add(body, body.socket)

    def discard(self, body: Watched) -> None:
        with self._lock:
            self.bodies.discard(body)
            self.departures.discard(body)

    def shutdown(self) -> int:
        """End every stream with a jittered retry hint, and every stream that
        opens from now on; return how many were open.
        """
        self.stopping = True
        bodies = self.bodies.copy()
        for body in bodies:
            body.end(EndReason.SHUTDOWN)
        return len(bodies)

    def _start(self) -> None:
        with self._lock:
            if self._running and self._pid == os.getpid():
                return
            # After a fork the parent's thread is gone: start one here.
            self._running = True
            self._pid = os.getpid()
        thread = threading.Thread(
            target=self._run, name="eventstream-monitor", daemon=True
        )
        thread.start()

    def _run(self) -> None:
        worker = gunicorn_worker()
        reported = -math.inf  # never: the first round reports
        while True:
            time.sleep(PERIOD)
            if worker is not None and not worker.alive and not self.stopping:
                count = self.shutdown()
                logger.info("The worker is stopping: ended its %d open streams.", count)
                grace = graceful_timeout()
                if grace is not None:
                    self._cut_at = time.monotonic() + grace / 2
            with self._lock:
                if not self.bodies:
                    # Started again by the next stream; no thread per idle app.
                    self._running = False
                    break
            try:
                with self._lock:
                    gone = self.departures.gone()
                for body in gone:
                    body.end(EndReason.CLOSED)  # its client left: free the slot
                now = time.monotonic()
                self.check(now)
                if now - reported >= REPORT_PERIOD:
                    reported = now
                    self.report()
            except Exception:
                # Supervised: a failure in one round is logged, the next runs.
                logger.exception("The stream monitor failed; it goes on.")
        self.report()  # the last streams are gone: say so

    def report(self) -> None:
        """Hand this worker's figures to every reporter (the backend's, for
        ``flask eventstream stats``, and the Prometheus exporter's).
        """
        try:
            figures = self.figures()
        except Exception:
            logger.exception("Could not gather this worker's figures.")
            return
        for reporter in list(self.reporters):
            try:
                reporter(figures)
            except Exception as error:  # a report is best effort, never fatal
                logger.debug("Could not report this worker's figures: %s", error)

    def check(self, now: float) -> None:
        """End what is past its deadline (a stream's lifetime, a token's
        expiry), and the streams whose write is blocked past the send timeout.
        """
        while self._deadlines and self._deadlines[0][0] <= now:
            with self._lock:
                _, _, ref, reason = heapq.heappop(self._deadlines)
            end = ref()
            if end is not None:
                end(reason)  # a no-op if it ended before
        if self._cut_at is not None and now >= self._cut_at:
            # Half the graceful timeout after the stop, what still runs is
            # inside a write that will not finish in time: cut it there.
            self._cut_at = None
            for body in self.bodies.copy():
                body.abort(EndReason.SHUTDOWN)
        # Blocked writes: a pass over every stream a few times per send
        # timeout (at most every SCAN seconds), yielding between slices.
        send_timeout = self.settings.send_timeout
        if now - self._scanned < min(send_timeout / 4, SCAN):
            return
        self._scanned = now
        for n, body in enumerate(self.bodies.copy()):
            if n % SLICE == SLICE - 1:
                # Thousands of streams: let deliveries run between slices
                # (under gevent, a switch), not wait for the whole pass.
                time.sleep(0)
            since = body.writing_since
            if since is not None and now - since > send_timeout:
                body.abort(EndReason.STALLED)


def worker_name() -> str:
    """This process, as ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"
