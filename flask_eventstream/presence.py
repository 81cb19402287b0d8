"""Presence: who is connected to each channel, in this worker and, through the
backend, in all of them; and when a member joins or leaves.

A stream counts from when it opens until a heartbeat after it closes, so a
reconnect is neither a leave nor a join. A poll or a long-poll counts for one
poll timeout after it (a lease), so a client that polls stays present between
its requests; only where presence is on (a named member, or a channel of a
presence namespace): anonymous polls elsewhere write nothing. A change is
counted here at once and sent to the backend by one thread of this worker
(a greenlet under gevent), which sends each member's count as it is then,
not the change: the backend ends
up with this worker's counts whatever the order or the failures on the way.
The same thread renews this worker's entries every half heartbeat and reaps
those of workers that stopped renewing theirs (a SIGKILL), so their members
leave within two heartbeats.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
import typing as t

from . import figures
from .backends import Backend
from .errors import BackendUnavailable
from .settings import Settings

#: The backend's name for the connections of anonymous subscribers.
ANONYMOUS = "a"
#: The backend's names of named members start with this.
MEMBER = "m:"

#: Leases (a poll's presence, a closed stream's linger) kept at most in one
#: worker: beyond it a poll is not counted, so polls over ever new channel
#: names cannot grow a worker's memory without bound.
MAX_LEASES = 100_000

#: Called with a channel, ``"join"`` or ``"leave"``, and the member.
Announce = t.Callable[[str, str, str], None]


def field(member: str | None) -> str:
    """The backend's name for ``member``'s connections."""
    return ANONYMOUS if member is None else MEMBER + member


class Presence:
    """This worker's connections by channel and member, kept in the backend.

    :param announce: told of each member's first join and last leave (the
        backend decides which worker tells: exactly one).
    """

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        announce: Announce,
        logger: logging.Logger,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.announce = announce
        self.logger = logger
        #: Seconds between two renewals; this worker's entries hold three.
        self.period = settings.heartbeat / 2
        #: channel -> backend name -> connections in this worker.
        self._tally: dict[str, dict[str, int]] = {}
        #: (channel, name) -> when a poll's presence ends (monotonic).
        self._leases: dict[tuple[str, str], float] = {}
        #: Counts to send, and channels to send whole.
        self._pending: set[tuple[str, str]] = set()
        self._whole: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False
        self._pid = 0
        self._worker = ""
        self._failing = False
        self._registered = False  # in this process (reset at a fork)
        #: The backend no longer knows this worker: renew in the next round.
        self._reaped = False
        self._warned_full = False

    # -- counting (no I/O: called from requests and closing streams) ------

    def enter(self, channels: t.Iterable[str], member: str | None) -> None:
        """A stream of ``member`` opened on ``channels``."""
        self._change(channels, field(member), 1)

    def leave(self, channels: t.Iterable[str], member: str | None) -> None:
        """A stream of ``member`` on ``channels`` closed. It lingers for a
        heartbeat (as a poll's lease), so a client that reconnects at once,
        to any worker, neither leaves nor joins.
        """
        channels = list(channels)
        self.lease(channels, member, self.period * 2)
        self._change(channels, field(member), -1)

    def poll(
        self, channels: t.Iterable[str], member: str | None, seconds: float
    ) -> None:
        """A poll of ``member``: present on ``channels`` for ``seconds``
        (one connection, however often it polls). Only where presence is on:
        on a channel of a namespace with ``presence``, or for a member
        ``identify`` named. An anonymous poll elsewhere costs nothing here
        nor in the backend (a poll holds no connection to count).
        """
        if member is None:
            channels = [c for c in channels if self.settings.channel(c).presence]
        if channels:
            self.lease(channels, member, seconds)

    def lease(
        self, channels: t.Iterable[str], member: str | None, seconds: float
    ) -> None:
        """``member`` is present on ``channels`` for ``seconds`` (one
        connection, however often it is renewed), within :data:`MAX_LEASES`.
        """
        name = field(member)
        until = time.monotonic() + seconds
        full = False
        with self._lock:
            leases = self._leases
            for channel in channels:
                known = leases.get((channel, name))
                if known is None:
                    if len(leases) >= MAX_LEASES:
                        full = True
                        continue
                    self._count(channel, name, 1)
                leases[(channel, name)] = max(until, known or until)
        if full and not self._warned_full:
            self._warned_full = True
            self.logger.warning(
                "This worker holds %d presence leases: polls on more channels"
                " are not counted in presence until some end.",
                MAX_LEASES,
            )
        self._kick()

    def _change(self, channels: t.Iterable[str], name: str, delta: int) -> None:
        with self._lock:
            for channel in channels:
                self._count(channel, name, delta)
        self._kick()

    def _count(self, channel: str, name: str, delta: int) -> None:
        table = self._tally.setdefault(channel, {})
        count = table.get(name, 0) + delta
        if count > 0:
            table[name] = count
        else:
            table.pop(name, None)
            if not table:
                del self._tally[channel]
        self._pending.add((channel, name))

    # -- reading ----------------------------------------------------------

    def read(self, channel: str) -> figures.Presence:
        """``{"count": connections, "members": {member: connections}}`` of
        ``channel`` in every worker the backend reaches.

        :raises BackendUnavailable: if the backend cannot be read.
        """
        self._announce_gone(self.backend.presence_tick("", 0)[1])  # reap first
        counts = self.backend.presence_read(channel)
        members = {
            name[len(MEMBER) :]: count
            for name, count in counts.items()
            if name.startswith(MEMBER)
        }
        return {"count": sum(counts.values()), "members": members}

    # -- the thread that keeps the backend up to date ---------------------

    def _kick(self) -> None:
        if not self._running or self._pid != os.getpid():
            with self._lock:
                if not self._running or self._pid != os.getpid():
                    if self._pid != os.getpid():  # a new worker: a new name
                        self._pid = os.getpid()
                        self._registered = False
                        host = socket.gethostname()
                        self._worker = f"{host}:{self._pid}:{secrets.token_hex(4)}"
                    self._running = True
                    threading.Thread(
                        target=self._run, name="eventstream-presence", daemon=True
                    ).start()
        self._wake.set()

    def _run(self) -> None:
        # Never: the first round renews (time.monotonic() counts from an
        # arbitrary point, the boot, that may be less than a period ago).
        renewed = -math.inf
        while True:
            self._wake.wait(self.period)
            self._wake.clear()
            try:
                now = time.monotonic()
                if self._reaped or now - renewed >= self.period:
                    self._reaped = False
                    self._end_leases(now)
                    self._renew()
                    renewed = now
                self._flush()
                if self._failing:
                    self._failing = False
                    self.logger.info("Presence reaches the backend again.")
            except BackendUnavailable as error:
                if not self._failing:
                    self._failing = True
                    self.logger.warning(
                        "Presence cannot reach the backend (%s); it retries"
                        " every %.1f s.",
                        error,
                        self.period,
                    )
            except Exception:
                self.logger.exception("Presence failed; it goes on.")
            with self._lock:
                if not (self._tally or self._pending or self._whole):
                    # Started again by the next change; its entries may
                    # expire meanwhile (there are none).
                    self._running = False
                    self._registered = False
                    return

    def _end_leases(self, now: float) -> None:
        with self._lock:
            for key, until in list(self._leases.items()):
                if until <= now:
                    del self._leases[key]
                    self._count(*key, -1)

    def _renew(self) -> None:
        lost, gone = self.backend.presence_tick(self._worker, self.period * 3)
        if lost:  # reaped (or new): set every count again
            with self._lock:
                self._whole.update(self._tally)
                reaped = self._registered
            if reaped:
                self.logger.warning(
                    "This worker did not renew its presence for %.1f s (blocked,"
                    " or the backend unreachable): others took its members for"
                    " gone. Counting them again.",
                    self.period * 3,
                )
        self._registered = True
        self._announce_gone(gone)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
            whole, self._whole = self._whole, set()
            sends: dict[str, tuple[dict[str, int], bool]] = {
                channel: (dict(self._tally.get(channel, {})), True) for channel in whole
            }
            for channel, name in pending:
                if channel not in whole:
                    counts = sends.setdefault(channel, ({}, False))[0]
                    counts[name] = self._tally.get(channel, {}).get(name, 0)
        try:
            for channel, (counts, full) in list(sends.items()):
                changes = self.backend.presence_set(self._worker, channel, counts, full)
                del sends[channel]
                if changes is None:  # reaped meanwhile: renew, then all again
                    with self._lock:
                        self._whole.update(self._tally)
                    self._reaped = True
                    self._wake.set()
                    continue
                for kind, name in changes:
                    if name.startswith(MEMBER):
                        self._tell(channel, kind, name[len(MEMBER) :])
        finally:
            with self._lock:  # what was not sent goes next time
                for channel, (counts, full) in sends.items():
                    if full:
                        self._whole.add(channel)
                    self._pending.update((channel, name) for name in counts)

    def _announce_gone(self, gone: list[tuple[str, str]]) -> None:
        for channel, name in gone:
            if name.startswith(MEMBER):
                self._tell(channel, "leave", name[len(MEMBER) :])

    def _tell(self, channel: str, kind: str, member: str) -> None:
        try:
            self.announce(channel, kind, member)
        except Exception:
            self.logger.exception(
                "Could not announce that %r %ss %r.", member, kind, channel
            )
