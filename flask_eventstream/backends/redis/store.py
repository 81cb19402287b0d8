"""The Redis backend's store: history in Redis Streams, ids from one sequence.

Each channel is a stream, ``{prefix}stream:{channel}``, trimmed to about
``EVENTSTREAM_HISTORY`` entries. A Lua script assigns every event its id from
one sequence shared by all channels (kept in ``{prefix}last-id``), so ids are
ordered and unique across every process and host, and one id is a complete
cursor for a subscription to several channels.

A worker holds a constant number of connections, whatever its client count:
one for its listener (a blocking ``XREAD`` over the streams its clients
subscribe to) and a small bounded pool for publishing and replay.
"""

from __future__ import annotations

import json
import threading
import typing as t

import redis

from ...errors import BackendUnavailable
from ...errors import PublishError
from ...ids import by_key
from ...ids import CursorProblem
from ...ids import format_id
from ...ids import Key
from ...ids import now_ms
from ...ids import parse_id
from ...ids import Record
from ...wire import Event
from ..base import Backend
from .codec import key_of
from .codec import record_of
from .listener import Listener

#: The Lua script of :meth:`RedisBackend.append`: assigns the next id of the
#: shared sequence (milliseconds from Redis's clock, never going back), adds
#: the event under it, trims, and sets the expiry.
APPEND_SCRIPT = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[2])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  lms = tonumber(lms)
  if ms <= lms then
    ms = lms
    seq = tonumber(lseq) + 1
  end
end
local id = string.format('%d-%d', ms, seq)
if ARGV[3] == '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'd', ARGV[4])
else
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'd', ARGV[4], 'e', ARGV[3])
end
redis.call('SET', KEYS[2], id)
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return id
"""


class RedisBackend(Backend):
    """History and fan-out through Redis, for many workers and hosts.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL.
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
        super().__init__(history)
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        self._last_key = f"{prefix}last-id"
        # close_channel() entries, read by every worker's listener. They take
        # ids from the shared sequence, so a listener that starts reading at
        # the head misses none issued after it.
        self._control = f"{prefix}control".encode()
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=2,
        )
        self.redis = redis.Redis(connection_pool=pool, decode_responses=False)
        self._append = self.redis.register_script(APPEND_SCRIPT)
        self._lock = threading.Lock()
        #: The head read that callers of head() are waiting for.
        self._asking: _HeadRead | None = None
        self._head_gate = threading.Lock()
        # Looked up at each call: deliver and revoke are set after this.
        self._listener = Listener(
            url,
            self.redis,
            self._control,
            lambda: self.head(),
            lambda run: self.deliver(run),
            lambda channel: self.revoke(channel),
        )

    def _key(self, channel: str) -> str:
        return f"{self.prefix}stream:{channel}"

    # -- storing ----------------------------------------------------------

    def append(self, channel: str, event: Event) -> Record:
        ttl_ms = int(self.ttl * 1000) if self.ttl else 0
        try:
            raw = self._append(
                keys=[self._key(channel), self._last_key],
                args=[self.history, ttl_ms, event.event or "", event.data],
            )
        except redis.RedisError as error:
            raise PublishError(
                f"Redis could not store the event on {channel!r}: {error}"
            ) from error
        id = raw.decode()
        key = parse_id(id)
        assert key is not None
        # Delivered to this worker's clients by its listener, like everyone's.
        return Record(channel, key, Event(event.data, event.event, id))

    def close_channel(self, channel: str) -> None:
        try:
            self._append(
                keys=[self._control, self._last_key],
                args=[100, 0, "", channel],
            )
        except redis.RedisError as error:
            raise PublishError(
                f"Redis could not close channel {channel!r}: {error}"
            ) from error

    def head(self) -> Key:
        # Thousands of clients may connect at once (after a deploy), more
        # than a small pool serves one GET each within its timeout. Callers
        # wait together for the next GET, sent after each of them arrived,
        # so its answer is as fresh as a GET of their own.
        with self._lock:
            ask = self._asking
            if ask is None:
                ask = self._asking = _HeadRead()
        with self._head_gate:  # one GET at a time
            if not ask.done:
                with self._lock:
                    if self._asking is ask:
                        self._asking = None  # later callers wait for the next
                try:
                    ask.key = key_of(self.redis.get(self._last_key))
                except redis.RedisError as error:
                    ask.error = BackendUnavailable(f"Redis is unavailable: {error}")
                ask.done = True
        if ask.error is not None:
            raise ask.error
        return ask.key

    def head_for(self, channels: t.Sequence[str]) -> Key:
        # The listener's cursor of a channel is where its live events begin
        # for this worker: no round trip, which matters when thousands of
        # clients connect at once. Not for a quiet channel's old cursor when
        # history expires: resuming from it could look like expired history.
        if len(channels) == 1:
            key = self._listener.cursor(self._key(channels[0]).encode())
            if key is not None:
                if not self.ttl or key[0] > now_ms() - self.ttl * 500:
                    return key
        return self.head()

    def read(self, channels: t.Sequence[str], after: Key) -> list[Record]:
        start = "(" + format_id(after)
        try:
            # One transaction: no trim can come between the check and the read.
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self._last_key)
                for channel in channels:
                    pipe.xinfo_stream(self._key(channel))
                    pipe.xrange(self._key(channel), min=start, max="+")
                replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        head = key_of(replies[0])
        if after > head:
            raise CursorProblem("unknown", "The cursor was never assigned here.")
        found: list[Record] = []
        for index, channel in enumerate(channels):
            info, entries = replies[1 + 2 * index], replies[2 + 2 * index]
            if isinstance(info, redis.ResponseError):  # no such stream
                if self.ttl and after[0] < now_ms() - self.ttl * 1000:
                    raise CursorProblem(
                        "expired",
                        f"The history of channel {channel!r} may have expired"
                        " (EVENTSTREAM_HISTORY_TTL).",
                    )
                continue
            if isinstance(info, Exception):
                raise BackendUnavailable(f"Redis could not read: {info}")
            # Trimming keeps no record of what it removed, only that it did:
            # a cursor before the first entry kept may have missed some.
            # (A reset when in doubt, never a silent gap.)
            trimmed = info["entries-added"] > info["length"]
            first = key_of(info.get("recorded-first-entry-id"))
            if trimmed and after < first:
                raise CursorProblem(
                    "expired",
                    f"Events of channel {channel!r} after the cursor are no"
                    " longer kept (EVENTSTREAM_HISTORY).",
                )
            found.extend(record_of(channel, id, fields) for id, fields in entries)
        found.sort(key=by_key)
        return found

    # -- listening --------------------------------------------------------

    def listen(self, channel: str) -> None:
        # Called by every subscription before it reads history. The listener
        # must read the channel from a point no later than that read, or the
        # events between the two would reach no one: so a subscription whose
        # channel is still being set up by another one waits for it.
        self._listener.listen(self._key(channel).encode(), channel)

    def unlisten(self, channel: str) -> None:
        self._listener.unlisten(self._key(channel).encode())

    def close(self) -> None:
        self._listener.stop()
        self.redis.close()

    def stats(self) -> dict[str, t.Any]:
        return {"backend": "redis", "listening": len(self._listener.cursors)}

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


class _HeadRead:
    """One GET of the newest id, shared by the callers waiting for it."""

    __slots__ = ("done", "key", "error")

    def __init__(self) -> None:
        self.done = False
        self.key: Key = (0, 0)
        self.error: BackendUnavailable | None = None
