"""The Redis backend's store: history in Redis Streams, ids from one sequence.

Each channel is a stream, ``{prefix}stream:{channel}``, trimmed to about
``EVENTSTREAM_HISTORY`` entries. A Lua script assigns every event its id from
one sequence shared by all channels (kept in ``{prefix}last-id``), so ids are
ordered and unique across every process and host, and one id is a complete
cursor for a subscription to several channels. The same step publishes the
entry on a pub/sub channel named like its stream, for the listeners.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t

import redis

from ...errors import BackendUnavailable
from ...errors import PublishError
from ...errors import PublishNotStored
from ...errors import PublishOutcomeUnknown
from ...ids import Cursor
from ...ids import CursorProblem
from ...ids import format_key
from ...ids import Key
from ...ids import new_epoch
from ...ids import newest
from ...ids import now_ms
from ...ids import Record
from ...wire import Event
from ..base import CLOSED_KEPT
from ..base import Once
from ..base import Retention
from .batch import Batcher
from .batch import NotSent
from .batch import pooled_connection
from .codec import key_of
from .codec import record_of
from .connect import Connector
from .history import check_kept
from .keys import Keys
from .own import OwnEvents
from .scripts import Append
from .scripts import APPEND_SCRIPT
from .scripts import Appended
from .scripts import HEAD_SCRIPT
from .scripts import NOT_STORED
from .scripts import READ_SCRIPT
from .scripts import RENEW_SCRIPT
from .scripts import Repeated


class Store:
    """Appends, reads and the head of the store, through a small pool.

    :param connector: where connections go (see :mod:`.connect`).
    :param keys: the names of the store's keys.
    :param retention: how many events of a channel to keep, and for how
        long (seconds, or ``None``).
    :param ttl: seconds the control stream is kept after its last entry.
    :param own: delivers this worker's appends to its clients at once, as
        far as it can (see :mod:`.own`); ``None`` leaves them to the listener.
    :param pool_size: connections for publishing and replay
        (``EVENTSTREAM_REDIS_POOL_SIZE``).
    :param timeout: seconds a caller waits for a pooled connection, and for
        an answer on it (``EVENTSTREAM_REDIS_TIMEOUT``).
    :param batch_timeout: seconds a publisher waits for its turn in a
        pipeline and its answer (``EVENTSTREAM_REDIS_BATCH_TIMEOUT``).
    """

    def __init__(
        self,
        connector: Connector,
        keys: Keys,
        retention: Retention,
        *,
        ttl: float | None = None,
        own: OwnEvents | None = None,
        pool_size: int = 4,
        timeout: float = 5.0,
        batch_timeout: float = 10.0,
    ) -> None:
        self.keys = keys
        self.retention = retention
        self.ttl = ttl
        pool = connector.pool(pool_size, timeout=timeout)
        self.client = redis.Redis(connection_pool=pool, decode_responses=False)
        script = self.client.register_script(APPEND_SCRIPT)
        self._head = self.client.register_script(HEAD_SCRIPT)
        self._renew = self.client.register_script(RENEW_SCRIPT)
        self._read = self.client.register_script(READ_SCRIPT)
        self._lock = threading.Lock()
        #: The newest key this process has seen: ids stay above it even if
        #: the store is emptied (see APPEND_SCRIPT).
        self.known = Cursor((0, 0), "")
        #: The head read that callers of head() are waiting for.
        self._asking: _HeadRead | None = None
        self._head_gate = threading.Lock()
        # Each pipeline of appends goes to this worker's clients at once, as
        # far as it can (see the batch and own modules).
        sent = own.deliver_own if own is not None else None
        self._append = Batcher(self.client, script, timeout=batch_timeout, sent=sent)

    # -- storing ----------------------------------------------------------

    def _store(
        self,
        stream: str | bytes,
        keep: tuple[int, float | None],
        event: Event,
        once: Once | None = None,
        channel: str = "",
    ) -> tuple[Cursor, Appended | Repeated]:
        """Run the append script; return the new cursor, and the script's
        reply. An idempotency key is scoped to ``channel``.
        """
        maxlen, ttl = keep
        known = self.known
        reply = self._append(
            Append(
                stream=stream,
                last_key=self.keys.last_id,
                epoch_key=self.keys.epoch,
                once_key=self.keys.once(channel, once.key) if once else "",
                maxlen=maxlen,
                ttl_ms=int(ttl * 1000) if ttl else 0,
                event=event.event or "",
                data=event.data,
                known_key=format_key(known.key),
                new_epoch=new_epoch(),
                window_ms=max(1, int(once.window * 1000)) if once else 0,
                known_epoch=known.epoch,
            )
        )
        cursor = Cursor(reply.key, reply.epoch)
        self._saw(cursor)
        return cursor, reply

    def append(self, channel: str, event: Event, once: Once | None = None) -> Record:
        """See :meth:`.Backend.append`."""
        try:
            cursor, reply = self._store(
                self.keys.stream(channel), self.retention(channel), event, once, channel
            )
        except redis.RedisError as error:
            raise publish_error(error, f"the event on {channel!r}") from error
        if isinstance(reply, Repeated):  # the first event, and nothing stored
            first = Event(reply.data, reply.event, str(cursor))
            record = Record(channel, cursor.key, first)
            record.repeat = True
            return record
        event = Event(event.data, event.event, str(cursor))
        return Record(channel, cursor.key, event, reply.prev)

    def close_channel(self, channel: str) -> None:
        """Mark ``channel`` closed (for tokens), then append the control
        entry that every worker's listener revokes it for.

        :raises PublishNotStored: if Redis could not be reached (or refused
            the entry): the streams were not ended.
        :raises PublishOutcomeUnknown: if Redis did not confirm it.
        """
        again = "Call close_channel again: closing a channel twice is harmless"
        try:
            # Tokens first: a client the close ends cannot come back with one.
            self._mark_closed(channel)
        except NotSent as error:
            raise PublishNotStored(
                f"Redis could not close channel {channel!r}: it could not be"
                f" reached ({error}). Nothing was done. {again}, once Redis is"
                " back."
            ) from error
        except redis.RedisError as error:
            raise PublishOutcomeUnknown(
                f"Redis did not confirm that it closed channel {channel!r} to"
                f" the tokens issued before ({error}); its streams were not"
                f" ended. {again}."
            ) from error
        try:
            # It takes an id from the shared sequence, so a listener that
            # starts reading at the head misses none issued after it.
            self._store(self.keys.control, (100, self.ttl), Event(channel))
        except redis.RedisError as error:
            what = f"the entry that closes channel {channel!r}"
            if isinstance(error, NotSent) or refused_unwritten(error):
                raise PublishNotStored(
                    f"Redis could not store {what} ({error}): the tokens issued"
                    " before admit it no more, but its streams were not ended."
                    f" {again}, once Redis is back."
                ) from error
            raise PublishOutcomeUnknown(
                f"Redis did not confirm that it stored {what} ({error}): its"
                f" streams may not have ended. {again}."
            ) from error

    def _mark_closed(self, channel: str) -> None:
        """Remember when ``channel`` was closed; :class:`NotSent` if Redis
        could not be reached (connected and checked before anything is sent).
        """
        pool = self.client.connection_pool
        try:
            held = pooled_connection(pool)
        except redis.RedisError as error:
            raise NotSent(f"{type(error).__name__}: {error}") from error
        with self.client.pipeline(transaction=False) as pipe:
            pipe.connection = held  # the pipeline releases it
            pipe.set(
                self.keys.closed(channel),
                repr(time.time()),
                px=int(CLOSED_KEPT * 1000),
            )
            pipe.execute()

    def closed_at(self, channels: t.Sequence[str]) -> dict[str, float]:
        """See :meth:`.Backend.closed_at`."""
        if not channels:
            return {}
        try:
            found = self.client.mget([self.keys.closed(c) for c in channels])
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        return {
            channel: float(at)
            for channel, at in zip(channels, found, strict=True)
            if at is not None
        }

    def head(self) -> Cursor:
        """See :meth:`.Backend.head`."""
        # Thousands of clients may connect at once (after a deploy), more
        # than a small pool serves one read each within its timeout. Callers
        # wait together for the next read, sent after each of them arrived,
        # so its answer is as fresh as a read of their own.
        with self._lock:
            ask = self._asking
            if ask is None:
                ask = self._asking = _HeadRead()
        with self._head_gate:  # one read at a time
            if not ask.done:
                with self._lock:
                    if self._asking is ask:
                        self._asking = None  # later callers wait for the next
                try:
                    raw_key, raw_epoch = self._head(
                        keys=[self.keys.last_id, self.keys.epoch], args=[new_epoch()]
                    )
                    ask.cursor = Cursor(key_of(raw_key), raw_epoch.decode())
                except redis.RedisError as error:
                    ask.error = BackendUnavailable(f"Redis is unavailable: {error}")
                ask.done = True
        if ask.error is not None:
            raise ask.error
        self._saw(ask.cursor)
        return ask.cursor

    def _saw(self, cursor: Cursor) -> None:
        known = self.known
        if cursor.epoch != known.epoch or cursor.key > known.key:
            self.known = cursor

    def newest(self) -> tuple[Key, str | None]:
        """The store's newest key and its epoch (``None``: it names none),
        read as they are: no epoch is named.
        """
        raw_last, raw_epoch = self.client.mget(self.keys.last_id, self.keys.epoch)
        epoch = raw_epoch.decode() if isinstance(raw_epoch, bytes) else None
        return key_of(raw_last), epoch

    def renew_epoch(self, epoch: str, seen: Key, lost: bool) -> str:
        """Name a new epoch if the store, still in ``epoch``, lost writes: its
        newest key is below ``seen``, or ``lost`` (the entry of ``seen`` is
        gone). Return the epoch after (see RENEW_SCRIPT).
        """
        args = [epoch, format_key(seen), new_epoch(), "1" if lost else ""]
        raw = self._renew(keys=[self.keys.last_id, self.keys.epoch], args=args)
        return bytes(raw).decode()

    def read(
        self, channels: t.Sequence[str], cursor: Cursor, limit: int, max_bytes: int
    ) -> list[Record]:
        """See :meth:`.Backend.read`; ``max_bytes`` past the first event."""
        after = cursor.key
        streams = [self.keys.stream(channel) for channel in channels]
        try:
            # One script: no trim comes between the check and the read, and
            # the streams are merged in Redis (see READ_SCRIPT).
            reply = self._read(
                keys=[self.keys.last_id, self.keys.epoch, *streams],
                args=[format_key(after), limit, max_bytes, cursor.epoch],
            )
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis could not be read: {error}") from error
        epoch = reply[1].decode() if reply[1] is not None else None
        if epoch != cursor.epoch:
            raise CursorProblem(
                "epoch",
                "The cursor is from another incarnation of the store (Redis was"
                " emptied, restarted without persistence, or replaced).",
            )
        if after > key_of(reply[0]):
            raise CursorProblem("unknown", "The cursor was never assigned here.")
        for index, channel in enumerate(channels):
            length, added, first, prev = reply[2 + 4 * index : 6 + 4 * index]
            ttl = self.retention(channel)[1]
            if length < 0:  # no such stream
                if ttl and after[0] < now_ms() - ttl * 1000:
                    raise CursorProblem(
                        "expired",
                        f"The history of channel {channel!r} may have expired"
                        " (EVENTSTREAM_HISTORY_TTL).",
                    )
                continue
            info: dict[str, t.Any] = {
                "length": length,
                "recorded-first-entry-id": first or None,
            }
            if added >= 0:
                info["entries-added"] = added
            check_kept(channel, after, info, [(b"", {b"p": prev})] if prev else [], ttl)
        entries = reply[2 + 4 * len(channels) :]
        found = []
        for at in range(0, len(entries), 5):
            index, raw_id, data, kind, prev = entries[at : at + 5]
            fields = {b"d": data}
            if kind:
                fields[b"e"] = kind
            if prev:
                fields[b"p"] = prev
            found.append(record_of(channels[index - 1], raw_id, fields, epoch))
        return found

    def latest(
        self, channels: t.Sequence[str], count: int
    ) -> tuple[Cursor, list[Record]]:
        """See :meth:`.Backend.latest`."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.last_id)
                pipe.get(self.keys.epoch)
                for channel in channels:
                    pipe.xrevrange(self.keys.stream(channel), "+", "-", count=count)
                replies = pipe.execute()
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        if replies[1] is None:  # an empty store: nothing to rewind
            return self.head(), []
        epoch = replies[1].decode()
        found = [
            record_of(channel, id, fields, epoch)
            for channel, entries in zip(channels, replies[2:], strict=True)
            for id, fields in entries
        ]
        head = Cursor(key_of(replies[0]), epoch)
        return head, newest(found, count)

    def close(self) -> None:
        """Release the pool's connections."""
        self.client.close()

    def report(self, worker: str, figures: dict[str, t.Any], ttl: float) -> None:
        """See :meth:`.Backend.report`."""
        key = self.keys.worker(worker)
        self.client.set(key, json.dumps(figures), px=max(1, int(ttl * 1000)))

    def reports(self) -> list[dict[str, t.Any]]:
        """See :meth:`.Backend.reports`."""
        try:
            keys = sorted(self.client.scan_iter(match=self.keys.worker("*"), count=500))
            values = self.client.mget(keys) if keys else []
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        # A key may expire between the scan and the read.
        return [json.loads(value) for value in values if value is not None]

    def history_sizes(self) -> dict[str, int]:
        """See :meth:`.Backend.history_sizes`."""
        start = len(self.keys.stream(""))
        try:
            keys = sorted(self.client.scan_iter(match=self.keys.stream("*"), count=500))
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.xlen(key)
            sizes = pipe.execute()
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        return {
            key.decode()[start:]: size
            for key, size in zip(keys, sizes, strict=True)
            if size
        }


def publish_error(error: redis.RedisError, what: str) -> PublishError:
    """The exception for an append that failed with ``error``: nothing of
    ``what`` was stored only if it never reached Redis, or Redis refused it
    before the script wrote anything (see :func:`refused_unwritten`).
    """
    if isinstance(error, NotSent):
        return PublishNotStored(
            f"Redis could not store {what}: it could not be reached ({error})."
            " Nothing was stored: retry once Redis is back."
        )
    if refused_unwritten(error):
        reason = str(error).removeprefix(NOT_STORED)
        return PublishNotStored(
            f"Redis could not store {what}: it refused it ({reason})."
            " Nothing was stored."
        )
    if isinstance(error, redis.ResponseError):
        return PublishOutcomeUnknown(
            f"Redis answered an error while storing {what} ({error}): it may"
            " have been stored and delivered before the error. Retry with the"
            " same idempotency_key to store it at most once."
        )
    return PublishOutcomeUnknown(
        f"Redis did not answer whether it stored {what} ({error}): it may have"
        " been stored and delivered. Retry with the same idempotency_key to"
        " store it at most once."
    )


def refused_unwritten(error: redis.RedisError) -> bool:
    """Whether Redis answered ``error`` to the append script with nothing
    written: the script refused before its first write (:data:`NOT_STORED`),
    or Redis did not run it (it did not know it, was loading its data, or
    was busy with another script). Any other error of a script may come
    after it wrote: Redis does not undo that.
    """
    if isinstance(error, (redis.exceptions.NoScriptError, redis.BusyLoadingError)):
        return True
    return isinstance(error, redis.ResponseError) and str(error).startswith(
        (NOT_STORED, "BUSY ")
    )


class _HeadRead:
    """One read of the newest id, shared by the callers waiting for it."""

    __slots__ = ("done", "cursor", "error")

    def __init__(self) -> None:
        self.done = False
        self.cursor = Cursor((0, 0), "")
        self.error: BackendUnavailable | None = None
