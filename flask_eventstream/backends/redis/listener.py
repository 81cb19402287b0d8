"""One listener per worker: a blocking ``XREAD`` over the streams its clients
subscribe to, handed to the worker in runs, in id order.

It never skips silently. Each entry names the one before it on its channel:
an entry whose predecessor the listener has not read means entries were
trimmed while it lagged (a blocked worker, a partition, its own reconnect
back-off), and that channel's local streams end (their clients resume from
history, or get a reset). A gap in the control stream may have lost a
revocation: every local stream ends, so every client passes ``authorize``
again. A new store epoch (Redis emptied or restarted) ends them all too.

The listener is supervised: an error reading Redis is retried with a capped
back-off, and an error anywhere else (a bug, or whatever the worker's
delivery raised) is logged and the loop goes on, so one bad message cannot
silence every other channel while heartbeats keep clients looking healthy.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
import time
import typing as t

import redis

from ...errors import BackendUnavailable
from ...ids import Cursor
from ...ids import format_key
from ...ids import Key
from ...ids import Record
from ...ids import Run
from .codec import key_of
from .codec import record_of

logger = logging.getLogger("flask_eventstream")

#: How long one ``XREAD`` blocks; a new channel also wakes it at once.
BLOCK_MS = 5000
#: Most entries read per stream per ``XREAD``.
COUNT = 1000
MAX_BACKOFF = 5.0
#: Longest wait for another subscription to set up a channel's listening.
SETUP_TIMEOUT = 10.0


class Listener:
    """Reads the streams of this worker's channels and the control stream.

    :param url: the Redis URL; the listener holds one connection of its own.
    :param client: the backend's pooled client, for ``CLIENT UNBLOCK``.
    :param control: the control stream's key.
    :param epoch_key: the key of the store's epoch.
    :param head: returns the newest id assigned (where a new channel's
        reading starts).
    :param deliver: called with each run of a channel's events.
    :param revoke: called with the channel of each control entry.
    :param lost: called with a channel (``None``: every channel) whose
        events or control messages this worker may have missed, and why.
    """

    def __init__(
        self,
        url: str,
        client: redis.Redis,
        control: bytes,
        epoch_key: str,
        head: t.Callable[[], Cursor],
        deliver: t.Callable[[Run], None],
        revoke: t.Callable[[str], None],
        lost: t.Callable[[str | None, str], None],
    ) -> None:
        self.url = url
        self.client = client
        self.control = control
        self.epoch_key = epoch_key
        self.head = head
        self.deliver = deliver
        self.revoke = revoke
        self.lost = lost
        #: The store's epoch, as the listener last read it.
        self.epoch: str | None = None
        self.lock = threading.Lock()
        #: stream key -> the id after which the listener reads it
        self.cursors: dict[bytes, bytes] = {}
        self.channels: dict[bytes, str] = {}
        #: stream key -> set once its cursor is in place (see listen)
        self.starting: dict[bytes, threading.Event] = {}
        self.thread: threading.Thread | None = None
        self.client_id: int | None = None
        self.stopped = False
        self.wake = threading.Event()
        #: A CLIENT UNBLOCK is on its way: the next XREAD will include every
        #: stream added before it.
        self.unblocking = False

    def cursor(self, key: bytes) -> Cursor | None:
        """Where the listener reads stream ``key`` from, if it reads it."""
        with self.lock:
            cursor = self.cursors.get(key)
            epoch = self.epoch
        if cursor is None or epoch is None:
            return None
        return Cursor(key_of(cursor), epoch)

    def listen(self, key: bytes, channel: str) -> None:
        """Read stream ``key`` (of ``channel``) from a point no later than
        now: see :meth:`RedisBackend.listen`.
        """
        with self.lock:
            if key in self.cursors:
                return
            ready = self.starting.get(key)
            owner = ready is None
            if ready is None:
                ready = self.starting[key] = threading.Event()
        if not owner:
            ready.wait(SETUP_TIMEOUT)
            if key not in self.cursors:
                raise BackendUnavailable(f"Redis could not listen to {channel!r}.")
            return
        try:
            head = self.head()
            start = format_key(head.key).encode()
            with self.lock:
                if self.epoch is None:
                    self.epoch = head.epoch
                self.cursors.setdefault(key, start)
                self.cursors.setdefault(self.control, start)
                self.channels[key] = channel
                if self.thread is None:
                    self.thread = threading.Thread(
                        target=self.run, name="eventstream-listener", daemon=True
                    )
                    self.thread.start()
        finally:
            with self.lock:
                self.starting.pop(key, None)
            ready.set()
        self.wake.set()
        client_id = self.client_id
        if client_id is not None and not self.unblocking:
            # It may block in XREAD without this stream: wake it now (once for
            # every channel added meanwhile: clients come in bursts).
            self.unblocking = True
            try:
                self.client.client_unblock(client_id)
            except redis.RedisError:
                self.unblocking = False  # it wakes by itself within BLOCK_MS

    def unlisten(self, key: bytes) -> None:
        with self.lock:
            self.cursors.pop(key, None)
            self.channels.pop(key, None)
            if not self.channels:
                self.cursors.pop(self.control, None)

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def run(self) -> None:
        """The listener thread: read, deliver, and survive anything."""
        failures = 0
        connection: redis.Redis | None = None
        while not self.stopped:
            try:
                if connection is None:
                    connection = redis.Redis.from_url(
                        self.url,
                        socket_timeout=BLOCK_MS / 1000 + 5,
                        socket_connect_timeout=2,
                        single_connection_client=True,
                    )
                    self.client_id = connection.client_id()
                    if failures:
                        logger.warning("Redis listener reconnected.")
                    failures = 0
                with self.lock:
                    streams: dict[t.Any, t.Any] = dict(self.cursors)
                    self.unblocking = False
                if not streams:
                    self.wake.clear()
                    self.wake.wait(1.0)
                    continue
                # The epoch with every read: a store emptied meanwhile shows
                # within one BLOCK_MS, whatever ids its new events have.
                pipe = connection.pipeline(transaction=False)
                pipe.get(self.epoch_key)
                pipe.xread(streams, count=COUNT, block=BLOCK_MS)
                raw_epoch, reply = pipe.execute()
                epoch = raw_epoch.decode() if raw_epoch is not None else None
                if epoch != self.epoch:
                    self.new_epoch(epoch)
                elif reply:
                    self.dispatch(reply, epoch)
            except Exception as error:
                self.client_id = None
                if connection is not None:
                    connection.close()
                    connection = None
                delay = min(MAX_BACKOFF, 0.1 * 2**failures)
                failures += 1
                if isinstance(error, redis.RedisError):
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
        if connection is not None:
            connection.close()

    def new_epoch(self, epoch: str | None) -> None:
        """The store is not the one the listener read: end every local
        stream, and read on from the new store's head.
        """
        logger.warning(
            "The Redis store changed (epoch %r, was %r): it was emptied,"
            " restarted without persistence or replaced; ending this worker's"
            " streams so their clients resume or reset.",
            epoch,
            self.epoch,
        )
        self.lost(None, "epoch")
        head = self.head()  # names an epoch if the store has none
        start = format_key(head.key).encode()
        with self.lock:
            self.epoch = head.epoch
            for key in self.cursors:
                self.cursors[key] = start

    def dispatch(self, reply: t.Any, epoch: str | None) -> None:
        """Hand one ``XREAD`` reply to the worker, a run at a time."""
        # Ids are one sequence across streams. When COUNT cut a stream short,
        # entries of other streams past its last one wait for the next read,
        # so events reach subscribers in id order.
        horizon: Key | None = None
        batch: list[tuple[bytes, Record]] = []
        for stream_key, entries in reply:
            if stream_key == self.control:
                channel: str | None = ""
            else:
                channel = self.channels.get(stream_key)
            if channel is None or not entries:
                continue
            if len(entries) >= COUNT:
                last = key_of(entries[-1][0])
                horizon = last if horizon is None else min(horizon, last)
            self.check_follows(stream_key, channel, entries[0][1].get(b"p"))
            for id, fields in entries:
                batch.append((stream_key, record_of(channel, id, fields, epoch or "")))
        batch.sort(key=lambda item: item[1].key)
        if horizon is not None:
            batch = [item for item in batch if item[1].key <= horizon]
        # Consecutive events of one channel go to its clients as one run.
        for stream_key, items in itertools.groupby(batch, key=operator.itemgetter(0)):
            records = [record for _, record in items]
            with self.lock:
                if stream_key in self.cursors:
                    self.cursors[stream_key] = format_key(records[-1].key).encode()
            try:
                if stream_key == self.control:
                    for record in records:
                        self.revoke(record.event.data)
                else:
                    self.deliver(Run(records[0].channel, records))
            except Exception:  # pragma: no cover - a bug
                # Each run on its own: a failure in one reaches no other.
                logger.exception(
                    "Delivering %d events of %r failed.",
                    len(records),
                    records[0].channel or "(control)",
                )

    def check_follows(
        self, stream_key: bytes, channel: str, prev: bytes | None
    ) -> None:
        """Call :attr:`lost` if the first entry read from ``stream_key`` does
        not follow the last one read: entries between were trimmed unread.
        """
        with self.lock:
            cursor = self.cursors.get(stream_key)
        if prev is None or cursor is None or key_of(prev) <= key_of(cursor):
            return
        if stream_key == self.control:
            logger.warning(
                "This worker missed control messages (revocations) while it"
                " lagged; ending all its streams so every client is authorized"
                " again."
            )
            self.lost(None, "control")
        else:
            logger.warning(
                "This worker missed events of %r while it lagged (trimmed"
                " before it read them); ending its streams so their clients"
                " resume from history or reset.",
                channel,
            )
            self.lost(channel, "lagged")
