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
from ..base import Backend
from ..base import CLOSED_KEPT
from ..base import Once
from .batch import Batcher
from .batch import NotSent
from .codec import appended
from .codec import key_of
from .codec import record_of
from .connect import Connector
from .history import check_kept
from .listener import IDLE
from .listener import Listener
from .presence import RedisPresence
from .scripts import APPEND_SCRIPT
from .scripts import HEAD_SCRIPT
from .scripts import READ_SCRIPT
from .scripts import RENEW_SCRIPT


class RedisBackend(RedisPresence, Backend):
    """History and fan-out through Redis, for many workers and hosts.

    :param url: ``redis://``, ``rediss://``, ``unix://`` or
        ``redis+sentinel://`` URL (see :mod:`.connect`).
    :param history: entries kept per channel (``MAXLEN ~``).
    :param ttl: seconds after its last event that a channel's history expires
        (``EVENTSTREAM_HISTORY_TTL``); ``None`` keeps it.
    :param prefix: the prefix of every key (``EVENTSTREAM_REDIS_PREFIX``).
    :param pool_size: connections for publishing and replay, per worker.
    """

    def __init__(
        self,
        url: str,
        history: int,
        *,
        ttl: float | None = None,
        prefix: str = "eventstream:",
        pool_size: int = 4,
    ) -> None:
        super().__init__(history, ttl)
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        self._last_key = f"{prefix}last-id"
        self._epoch_key = f"{prefix}epoch"
        # close_channel() entries, read by every worker's listener. They take
        # ids from the shared sequence, so a listener that starts reading at
        # the head misses none issued after it.
        self._control = f"{prefix}control".encode()
        connector = Connector(url)
        pool = connector.pool(pool_size, timeout=5)
        self.redis = redis.Redis(connection_pool=pool, decode_responses=False)
        script = self.redis.register_script(APPEND_SCRIPT)
        self._head = self.redis.register_script(HEAD_SCRIPT)
        self._renew = self.redis.register_script(RENEW_SCRIPT)
        self._read = self.redis.register_script(READ_SCRIPT)
        self._lock = threading.Lock()
        #: The newest key this process has seen: ids stay above it even if
        #: the store is emptied (see APPEND_SCRIPT).
        self.known = Cursor((0, 0), "")
        #: The head read that callers of head() are waiting for.
        self._asking: _HeadRead | None = None
        self._head_gate = threading.Lock()
        # Looked up at each call: deliver and revoke are set after this.
        self._listener = Listener(
            connector.connection(socket_timeout=IDLE + 5),
            self.redis,
            self._control,
            (self._last_key, self._epoch_key),
            lambda: self.head(),
            self._renew_epoch,
            lambda run: self.deliver(run),
            lambda channel: self.revoke(channel),
            lambda channel, reason: self.lost(channel, reason),
        )
        # Each pipeline of appends goes to this worker's clients at once, as
        # far as it can (see the batch and own modules).
        sent = self._listener.deliver_own
        self._append = Batcher(self.redis, script, timeout=10, sent=sent)

    def _key(self, channel: str) -> str:
        return f"{self.prefix}stream:{channel}"

    # -- storing ----------------------------------------------------------

    def _store(
        self,
        key: str | bytes,
        keep: tuple[int, float | None],
        event: Event,
        once: Once | None = None,
        channel: str = "",
    ) -> tuple[Cursor, list[t.Any]]:
        """Run the append script; return the new cursor, and the script's
        reply (see APPEND_SCRIPT). An idempotency key is scoped to
        ``channel``.
        """
        maxlen, ttl = keep
        # "/" is in no channel name: no two (channel, key) pairs share a name.
        once_key = f"{self.prefix}once/{channel}/{once.key}" if once else ""
        ttl_ms = int(ttl * 1000) if ttl else 0
        window_ms = max(1, int(once.window * 1000)) if once is not None else 0
        reply = self._append(
            [
                key,
                self._last_key,
                self._epoch_key,
                once_key,
            ],
            [
                maxlen,
                ttl_ms,
                event.event or "",
                event.data,
                format_key(self.known.key),
                new_epoch(),
                window_ms,
                self.known.epoch,
            ],
        )
        cursor = Cursor(key_of(reply[0]), reply[1].decode())
        self._saw(cursor)
        return cursor, reply

    def append(self, channel: str, event: Event, once: Once | None = None) -> Record:
        stream = self._key(channel)
        try:
            cursor, reply = self._store(
                stream, self.retention(channel), event, once, channel
            )
        except redis.RedisError as error:
            raise publish_error(error, f"the event on {channel!r}") from error
        stored = appended(reply)
        if stored is None:  # a repeat: the first event, and nothing stored
            first = Event(reply[3].decode(), reply[4].decode() or None, str(cursor))
            record = Record(channel, cursor.key, first)
            record.repeat = True
            return record
        event = Event(event.data, event.event, str(cursor))
        return Record(channel, cursor.key, event, stored.prev)

    def close_channel(self, channel: str) -> None:
        try:
            # Tokens first: a client the close ends cannot come back with one.
            self.redis.set(
                self._closed_key(channel),
                repr(time.time()),
                px=int(CLOSED_KEPT * 1000),
            )
            self._store(self._control, (100, self.ttl), Event(channel))
        except redis.RedisError as error:
            what = f"the entry that closes channel {channel!r}"
            raise publish_error(error, what) from error

    def closed_at(self, channels: t.Sequence[str]) -> dict[str, float]:
        if not channels:
            return {}
        try:
            found = self.redis.mget([self._closed_key(c) for c in channels])
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        return {
            channel: float(at)
            for channel, at in zip(channels, found, strict=True)
            if at is not None
        }

    def _closed_key(self, channel: str) -> str:
        return f"{self.prefix}closed/{channel}"

    def head(self) -> Cursor:
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
                        keys=[self._last_key, self._epoch_key], args=[new_epoch()]
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

    def _renew_epoch(self, epoch: str, seen: Key, lost: bool) -> str:
        args = [epoch, format_key(seen), new_epoch(), "1" if lost else ""]
        raw = self._renew(keys=[self._last_key, self._epoch_key], args=args)
        return bytes(raw).decode()

    def head_for(self, channels: t.Sequence[str]) -> Cursor:
        # The listener's cursor of a channel is where its live events begin
        # for this worker: no round trip, which matters when thousands of
        # clients connect at once. Not for a quiet channel's old cursor when
        # history expires: resuming from it could look like expired history.
        if len(channels) == 1:
            cursor = self._listener.cursor(self._key(channels[0]).encode())
            if cursor is not None:
                ttl = self.retention(channels[0])[1]
                if not ttl or cursor.key[0] > now_ms() - ttl * 500:
                    return cursor
        return self.head()

    def read(
        self, channels: t.Sequence[str], cursor: Cursor, limit: int
    ) -> list[Record]:
        after = cursor.key
        streams = [self._key(channel) for channel in channels]
        try:
            # One script: no trim comes between the check and the read, and
            # the streams are merged in Redis (see READ_SCRIPT).
            reply = self._read(
                keys=[self._last_key, self._epoch_key, *streams],
                args=[format_key(after), limit, self.read_bytes, cursor.epoch],
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
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self._last_key)
                pipe.get(self._epoch_key)
                for channel in channels:
                    pipe.xrevrange(self._key(channel), "+", "-", count=count)
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

    # -- listening --------------------------------------------------------

    def listen(self, channel: str) -> None:
        # Called by every subscription before it reads history. The listener
        # must read the channel from a point no later than that read, or the
        # events between the two would reach no one: so a subscription whose
        # channel is still being set up by another one waits for it.
        self._listener.listen(self._key(channel).encode(), channel)

    def follow_closes(self) -> None:
        # The listener reads the control stream from its first listen on:
        # a subscription's authorize runs before that.
        self._listener.listen(self._control, "")

    def unlisten(self, channel: str) -> None:
        self._listener.unlisten(self._key(channel).encode())

    def close(self) -> None:
        self._listener.stop()
        self.redis.close()

    def stats(self) -> dict[str, t.Any]:
        return {"backend": "redis", "listening": len(self._listener.channels)}

    def report(self, worker: str, figures: dict[str, t.Any], ttl: float) -> None:
        key = f"{self.prefix}worker:{worker}"
        self.redis.set(key, json.dumps(figures), px=max(1, int(ttl * 1000)))

    def reports(self) -> list[dict[str, t.Any]]:
        keys = sorted(self.redis.scan_iter(match=f"{self.prefix}worker:*", count=500))
        values = self.redis.mget(keys) if keys else []
        # A key may expire between the scan and the read.
        return [json.loads(value) for value in values if value is not None]

    def history_sizes(self) -> dict[str, int]:
        start = len(f"{self.prefix}stream:")
        keys = sorted(self.redis.scan_iter(match=f"{self.prefix}stream:*", count=500))
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.xlen(key)
        return {
            key.decode()[start:]: size
            for key, size in zip(keys, pipe.execute(), strict=True)
            if size
        }


def publish_error(error: redis.RedisError, what: str) -> PublishError:
    """The exception for an append that failed with ``error``: whether
    ``what`` was stored is known only if it never reached Redis or Redis
    answered with an error.
    """
    if isinstance(error, NotSent):
        return PublishNotStored(
            f"Redis could not store {what}: it could not be reached ({error})."
            " Nothing was stored: retry once Redis is back."
        )
    if isinstance(error, redis.ResponseError):
        return PublishNotStored(
            f"Redis could not store {what}: it refused it ({error})."
            " Nothing was stored."
        )
    return PublishOutcomeUnknown(
        f"Redis did not answer whether it stored {what} ({error}): it may have"
        " been stored and delivered. Retry with the same idempotency_key to"
        " store it at most once."
    )


class _HeadRead:
    """One read of the newest id, shared by the callers waiting for it."""

    __slots__ = ("done", "cursor", "error")

    def __init__(self) -> None:
        self.done = False
        self.cursor = Cursor((0, 0), "")
        self.error: BackendUnavailable | None = None
