"""One listener per worker: a pub/sub connection subscribed to the channels
its clients listen to, handing their events to the worker in runs, in id
order.

The append script publishes each entry as it stores it, so a listener costs
nothing per channel it listens to, only per event it receives: a worker with
10,000 quiet channels reads no more than one with ten. While the connection
lives, no message is missed; what it does when it breaks is :mod:`.recovery`,
which it is given, as it is given the store (for the head) and the worker's
sink; where its channels stand is the :class:`.ListenerState` it shares with
:mod:`.own`.

The listener is supervised: an error reading Redis is retried with a capped
back-off, and an error anywhere else (a bug, or whatever the worker's
delivery raised) is logged and the loop goes on, so one bad message cannot
silence every other channel while heartbeats keep clients looking healthy.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import typing as t
from operator import itemgetter

import redis

from ...errors import BackendUnavailable
from ...ids import Key
from ...ids import Record
from ...ids import Run
from ..base import Sink
from .codec import Entry
from .recovery import COUNT
from .recovery import Recovery
from .scripts import parse_message
from .state import ListenerState
from .store import Store

logger = logging.getLogger("flask_eventstream")

#: Seconds without a message before the listener checks the store's epoch and
#: that its connection still answers (a PING), unless told otherwise
#: (``EVENTSTREAM_REDIS_IDLE_CHECK``).
IDLE = 5.0
MAX_BACKOFF = 5.0
#: Longest wait for Redis to confirm a subscription.
SETUP_TIMEOUT = 10.0


class Listener:
    """Receives the events of this worker's channels and control messages.

    :param connection: the listener's own connection, not yet connected.
    :param state: where this worker's events stand (shared with its own
        events' shortcut).
    :param store: the store, for the head a new channel starts from.
    :param recovery: the checks of the store and the catch-up after a gap.
    :param sink: the worker's: each run of a channel's events goes to its
        ``deliver``, the channel of each control entry to its ``revoke``.
    :param idle: seconds without a message before the store and the
        connection are checked.
    """

    def __init__(
        self,
        connection: redis.Connection,
        state: ListenerState,
        store: Store,
        recovery: Recovery,
        sink: Sink,
        idle: float = IDLE,
    ) -> None:
        self.connection = connection
        self.state = state
        self.store = store
        self.recovery = recovery
        self.sink = sink
        self.idle = idle
        #: Sends on the connection (subscriptions come from request threads).
        self.sending = threading.Lock()
        self.connected = False
        #: stream key -> set when Redis confirms the subscription
        self.confirmed: dict[bytes, threading.Event] = {}
        self.thread: threading.Thread | None = None
        self.stopped = False
        #: Connection attempts failed in a row.
        self.failures = 0
        #: Whether it ever connected (else a failure is not a lost connection).
        self.ever_connected = False

    def listen(self, key: bytes, channel: str) -> None:
        """Receive stream ``key`` (of ``channel``) from a point no later than
        now: see :meth:`.RedisBackend.listen`.
        """
        # What Redis is told changes with the state, in the same order: an
        # UNSUBSCRIBE sent after a later SUBSCRIBE would silence the channel.
        state = self.state
        with self.sending:
            with state.lock:
                if key in state.cursors:
                    return
                ready = self.confirmed.get(key)
                owner = ready is None
                if ready is None:
                    ready = self.confirmed[key] = threading.Event()
                    state.channels[key] = channel
                    state.channels.setdefault(state.control, "")
                if self.thread is None:
                    self.thread = threading.Thread(
                        target=self.run, name="eventstream-listener", daemon=True
                    )
                    self.thread.start()
            if owner:
                self._command("SUBSCRIBE", key)  # else the next connect does
        # Whatever is published once Redis confirms reaches this worker. A
        # failed connect wakes the wait at once (see give_up).
        timeout = SETUP_TIMEOUT if self.failures == 0 else 1.0  # Redis is down
        ready.wait(timeout)
        with state.lock:
            # Another caller may have set the cursor (and let the setup go);
            # else a setup no longer wanted was given up.
            given_up = key not in state.cursors and self.confirmed.get(key) is not ready
        if not ready.is_set() or given_up or key not in state.channels:
            raise BackendUnavailable(f"Redis could not listen to {channel!r}.")
        # Each caller, not only the one that subscribed: if that one's read
        # fails (a crowd took the pool), the others must not go live unheard.
        self._start(key, channel, ready)

    def _start(self, key: bytes, channel: str, ready: threading.Event) -> None:
        """Set stream ``key``'s cursor from a head read made after Redis
        confirmed it (``ready``), unless another caller has: without one, the
        listener cannot catch the stream up after a reconnect.
        """
        state = self.state
        if not self._listening(key):
            head = self.store.head()
            with state.lock:
                if state.epoch is None:
                    state.epoch = head.epoch
                # Not if unlistened meanwhile: its cursor would stand for a
                # subscription Redis has not confirmed.
                if self.confirmed.get(key) is ready:
                    state.cursors.setdefault(key, head.key)
                # Subscribed with the first channel, and never unsubscribed.
                state.cursors.setdefault(state.control, head.key)
        if not self._listening(key):
            raise BackendUnavailable(f"Redis could not listen to {channel!r}.")

    def _listening(self, key: bytes) -> bool:
        """Whether stream ``key`` has its cursor; its setup is let go then."""
        with self.state.lock:
            if key not in self.state.cursors:
                return False
            # Listening (the cursor says so from now on): an idle channel
            # keeps no event. Until then (a read failed), the next caller
            # reads the head without subscribing again.
            self.confirmed.pop(key, None)
            return True

    def unlisten(self, key: bytes) -> None:
        state = self.state
        with self.sending:
            with state.lock:
                state.channels.pop(key, None)
                state.cursors.pop(key, None)
                self.confirmed.pop(key, None)
            self._command("UNSUBSCRIBE", key)

    def command(self, *command: t.Any) -> None:
        with self.sending:
            self._command(*command)

    def _command(self, *command: t.Any) -> None:
        """Send on the listener's connection (holding :attr:`sending`), if it
        is up: else the next connect subscribes to every channel still wanted.
        """
        if not self.connected:
            return
        try:
            self.connection.send_command(*command)
        except redis.RedisError:
            pass  # the listener sees the connection fail and reconnects

    def stop(self) -> None:
        self.stopped = True
        with self.sending:
            self.connected = False
            self.connection.disconnect()

    def run(self) -> None:
        """The listener thread: receive, deliver, and survive anything."""
        while not self.stopped:
            try:
                self.connect()
                self.receive()
            except Exception as error:
                with self.sending:
                    self.connected = False
                    self.connection.disconnect()
                self.give_up()
                if self.stopped:
                    break
                delay = min(MAX_BACKOFF, 0.1 * 2**self.failures)
                self.failures += 1
                if isinstance(error, redis.RedisError) and not self.ever_connected:
                    logger.warning(
                        "Redis listener cannot connect to %s (%s): streams are"
                        " answered 'unavailable' (clients retry) until it can;"
                        " retrying in %.1fs.",
                        self.where(),
                        error,
                        delay,
                    )
                elif isinstance(error, redis.RedisError):
                    logger.warning(
                        "Redis listener lost its connection (%s); retrying in %.1fs.",
                        error,
                        delay,
                    )
                else:  # a bug: say where, and go on
                    logger.exception(
                        "Redis listener failed; restarting it in %.1fs.", delay
                    )
                time.sleep(delay)
        with self.sending:
            self.connected = False
            self.connection.disconnect()

    def give_up(self) -> None:
        """Wake every caller waiting for Redis to confirm a channel: the
        connection is gone, and they answer 'unavailable' now, not at the
        setup timeout. Their next try subscribes again.
        """
        with self.state.lock:
            waiting = list(self.confirmed.values())
            self.confirmed.clear()
        for ready in waiting:
            ready.set()

    def connect(self) -> None:
        """Subscribe to every stream wanted, then read what was missed while
        the connection was down (nothing the first time).
        """
        with self.sending:
            self.connection.connect()
            with self.state.lock:
                keys = list(self.state.channels)
            for start in range(0, len(keys), COUNT):
                self.connection.send_command("SUBSCRIBE", *keys[start : start + COUNT])
            self.connected = True
        waiting = set(keys)
        early: list[t.Any] = []
        while waiting:
            reply = self.connection.read_response()
            if reply[0] == b"subscribe":
                waiting.discard(reply[1])
                self.confirm(reply[1])
            else:
                early.append(reply)
        for entries in self.recovery.catch_up():
            self.dispatch(entries)
        self.handle(early)
        if self.failures:
            again = "reconnected" if self.ever_connected else "connected"
            logger.warning("Redis listener %s to %s.", again, self.where())
            self.failures = 0
        self.ever_connected = True

    def where(self) -> str:
        return f"{self.connection.host}:{self.connection.port}"

    def confirm(self, key: bytes) -> None:
        with self.state.lock:
            ready = self.confirmed.get(key)
        if ready is not None:
            ready.set()

    def receive(self) -> None:
        """Read messages until the connection fails (or the listener stops)."""
        connection = self.connection
        pinged = False
        while not self.stopped:
            if not connection.can_read(timeout=self.idle):
                if pinged:
                    raise redis.ConnectionError("Redis did not answer a PING.")
                # The PING tests this connection; the check goes through the
                # pool, and its failure says nothing of this one.
                self.command("PING")
                pinged = True
                self.check_store()
                continue
            pinged = False
            replies = [connection.read_response()]
            while len(replies) < COUNT and connection.can_read(timeout=0):
                replies.append(connection.read_response())
            self.handle(replies)

    def check_store(self) -> None:
        """The idle check of the store, through the pool. When no pooled
        connection is free (a crowd of reconnecting clients holds them all),
        or Redis does not answer it, the check is made again at the next idle
        check: dropping this healthy connection for it would gain nothing (the
        PING says whether it lives) and make every stream of the worker wait
        for a reconnect and a catch-up, which needs the pool too.
        """
        try:
            self.recovery.check_store()
        except (redis.RedisError, BackendUnavailable) as error:
            logger.warning(
                "Redis listener could not check the store (%s); it checks again"
                " after %.1fs without a message.",
                error,
                self.idle,
            )

    def handle(self, replies: list[t.Any]) -> None:
        state = self.state
        entries: list[Entry] = []
        for reply in replies:
            kind = reply[0]
            if kind == b"message":
                channel = state.channels.get(reply[1])
                if channel is None:
                    continue  # unsubscribed since
                entry, epoch = parse_message(reply[1], channel, reply[2])
                if epoch != state.epoch and state.epoch is not None:
                    self.dispatch(entries)
                    entries = []
                    self.recovery.new_epoch(epoch)
                    continue
                entries.append(entry)
            elif kind == b"subscribe":
                self.confirm(reply[1])
        self.dispatch(entries)

    def dispatch(self, entries: list[Entry]) -> None:
        """Hand entries, in id order, to the worker a run at a time."""
        if not entries:
            return
        state = self.state
        runs: list[tuple[bytes, Key | None, list[Record]]] = []
        with state.lock:
            newest = entries[-1]
            if newest.record.key > state.seen:
                state.seen, state.seen_stream = newest.record.key, newest.stream
            # Consecutive events of one channel go to its clients as one run.
            for stream, items in itertools.groupby(entries, key=itemgetter(0)):
                cursor = state.cursors.get(stream)
                records = [
                    e.record for e in items if cursor is None or e.record.key > cursor
                ]
                if not records or stream not in state.channels:
                    continue  # read twice (around a reconnect), or unsubscribed
                if cursor is not None:
                    # Before delivering: a client that joins meanwhile starts
                    # after these (see RedisBackend.head_for).
                    state.cursors[stream] = records[-1].key
                runs.append((stream, cursor, records))
            # A publisher's own events wait for these (see the own module).
            state.dispatching = bool(runs)
        try:
            for stream, cursor, records in runs:
                self._deliver(stream, cursor, records)
        finally:
            with state.lock:
                state.dispatching = False

    def _deliver(
        self, stream: bytes, cursor: Key | None, records: list[Record]
    ) -> None:
        if cursor is not None:
            # Delivered all the same: a client that read history up to
            # them since needs them.
            self.recovery.missed(stream, cursor, records[0])
        try:
            if stream == self.state.control:
                for record in records:
                    self.sink.revoke(record.event.data)
            else:
                with self.state.delivering:
                    self.sink.deliver(Run(records[0].channel, records))
        except Exception:  # pragma: no cover - a bug
            # Each run on its own: a failure in one reaches no other.
            logger.exception(
                "Delivering %d events of %r failed.",
                len(records),
                records[0].channel or "(control)",
            )
