"""The Redis backend: the objects of this package, composed, behind the
:class:`.Backend` interface.

It makes each one with what it needs, in the one order their inputs allow:
the listener's state, a worker's own events (given the state and the sink),
the store (given the own events' shortcut), the catch-up (given the store
and the state), the listener (given all of those), and presence (given the
store's client). None of them calls back into this class.
"""

from __future__ import annotations

import typing as t

from ...ids import Cursor
from ...ids import now_ms
from ...ids import Record
from ...wire import Event
from ..base import Backend
from ..base import NOWHERE
from ..base import Once
from ..base import Retention
from ..base import Sink
from .connect import Connector
from .keys import Keys
from .listener import IDLE
from .listener import Listener
from .own import OwnEvents
from .presence import RedisPresence
from .recovery import Recovery
from .state import ListenerState
from .store import Store


class RedisBackend(Backend):
    """History and fan-out through Redis, for many workers and hosts.

    :param url: ``redis://``, ``rediss://``, ``unix://`` or
        ``redis+sentinel://`` URL (see :mod:`.connect`).
    :param history: entries kept per channel (``MAXLEN ~``).
    :param ttl: seconds after its last event that a channel's history expires
        (``EVENTSTREAM_HISTORY_TTL``); ``None`` keeps it.
    :param prefix: the prefix of every key (``EVENTSTREAM_REDIS_PREFIX``).
    :param sink: where the events that reach this worker go, and its
        revocations and losses (see :class:`.Sink`).
    :param retention: how many events of a channel to keep, and for how
        long; by default ``history`` and ``ttl`` for every channel.
    :param pool_size: connections for publishing and replay, per worker
        (``EVENTSTREAM_REDIS_POOL_SIZE``).
    :param timeout: seconds to wait for a pooled connection and for an
        answer on it (``EVENTSTREAM_REDIS_TIMEOUT``).
    :param batch_timeout: seconds a publish waits for its turn in a pipeline
        and its answer (``EVENTSTREAM_REDIS_BATCH_TIMEOUT``).
    :param idle_check: seconds without a message before the listener checks
        the store and its connection (``EVENTSTREAM_REDIS_IDLE_CHECK``).
    """

    def __init__(
        self,
        url: str,
        history: int,
        *,
        ttl: float | None = None,
        prefix: str = "eventstream:",
        sink: Sink = NOWHERE,
        retention: Retention | None = None,
        pool_size: int = 4,
        timeout: float = 5.0,
        batch_timeout: float = 10.0,
        idle_check: float = IDLE,
    ) -> None:
        super().__init__(history, ttl, sink, retention)
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        keys = Keys(prefix)
        connector = Connector(url)
        #: Where this worker's events stand; shared by the three below.
        self.state = ListenerState(keys.control)
        #: Delivers this worker's appends to its clients at once.
        self.own_events = OwnEvents(self.state, sink.deliver)
        #: Appends, reads and the head.
        self.store = Store(
            connector,
            keys,
            self.retention,
            ttl=ttl,
            own=self.own_events,
            pool_size=pool_size,
            timeout=timeout,
            batch_timeout=batch_timeout,
        )
        #: The checks of the store and the catch-up after a gap.
        self.recovery = Recovery(self.store, self.state, sink.lost)
        #: One connection per worker: receives, and delivers to the sink.
        self.listener = Listener(
            connector.connection(socket_timeout=idle_check + 5),
            self.state,
            self.store,
            self.recovery,
            sink,
            idle=idle_check,
        )
        #: Every worker's connections by channel and member.
        self.presence = RedisPresence(self.store.client, prefix)
        #: The names of the store's keys.
        self.keys = keys

    def append(self, channel: str, event: Event, once: Once | None = None) -> Record:
        return self.store.append(channel, event, once)

    def close_channel(self, channel: str) -> None:
        self.store.close_channel(channel)

    def closed_at(self, channels: t.Sequence[str]) -> dict[str, float]:
        return self.store.closed_at(channels)

    def head(self) -> Cursor:
        return self.store.head()

    def head_for(self, channels: t.Sequence[str]) -> Cursor:
        # The listener's cursor of a channel is where its live events begin
        # for this worker: no round trip, which matters when thousands of
        # clients connect at once. Not for a quiet channel's old cursor when
        # history expires: resuming from it could look like expired history.
        if len(channels) == 1:
            cursor = self.state.cursor(self.keys.stream(channels[0]).encode())
            if cursor is not None:
                ttl = self.retention(channels[0])[1]
                if not ttl or cursor.key[0] > now_ms() - ttl * 500:
                    return cursor
        return self.store.head()

    def read(
        self, channels: t.Sequence[str], cursor: Cursor, limit: int
    ) -> list[Record]:
        return self.store.read(channels, cursor, limit, self.read_bytes)

    def latest(
        self, channels: t.Sequence[str], count: int
    ) -> tuple[Cursor, list[Record]]:
        return self.store.latest(channels, count)

    def listen(self, channel: str) -> None:
        # Called by every subscription before it reads history. The listener
        # must read the channel from a point no later than that read, or the
        # events between the two would reach no one: so a subscription whose
        # channel is still being set up by another one waits for it.
        self.listener.listen(self.keys.stream(channel).encode(), channel)

    def follow_closes(self) -> None:
        # The listener reads the control stream from its first listen on:
        # a subscription's authorize runs before that.
        self.listener.listen(self.keys.control, "")

    def unlisten(self, channel: str) -> None:
        self.listener.unlisten(self.keys.stream(channel).encode())

    def close(self) -> None:
        self.listener.stop()
        self.store.close()

    def stats(self) -> dict[str, t.Any]:
        return {"backend": "redis", "listening": len(self.state.channels)}

    def report(self, worker: str, figures: dict[str, t.Any], ttl: float) -> None:
        self.store.report(worker, figures, ttl)

    def reports(self) -> list[dict[str, t.Any]]:
        return self.store.reports()

    def history_sizes(self) -> dict[str, int]:
        return self.store.history_sizes()

    def presence_set(
        self, worker: str, channel: str, counts: t.Mapping[str, int], full: bool
    ) -> list[tuple[str, str]] | None:
        return self.presence.presence_set(worker, channel, counts, full)

    def presence_tick(
        self, worker: str, ttl: float
    ) -> tuple[bool, list[tuple[str, str]]]:
        return self.presence.presence_tick(worker, ttl)

    def presence_read(self, channel: str) -> dict[str, int]:
        return self.presence.presence_read(channel)
